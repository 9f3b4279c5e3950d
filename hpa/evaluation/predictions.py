"""Test predictions as tables: the frame of ``test_predictions.csv`` and the per-class report,
written into a run directory."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from hpa.core.labels import LabelSet
from hpa.core.run_dir import RunDir
from hpa.data.dataset import RGBYDataset
from hpa.evaluation.metrics import per_class_report
from hpa.evaluation.thresholds import binarize

if TYPE_CHECKING:  # a module is only called here; models sit above evaluation
    from hpa.models.module import HPAModule


def prediction_frame(
    label_set: LabelSet, ids: np.ndarray, labels: np.ndarray, probabilities: np.ndarray
) -> pd.DataFrame:
    """``Id``, one probability column per class name and the true ``Target``."""
    frame = pd.DataFrame(probabilities, columns=list(label_set.class_names))
    frame.insert(0, "Id", ids)
    frame["Target"] = [label_set.format(row) for row in labels]
    return frame


def frame_probabilities(label_set: LabelSet, predictions: pd.DataFrame) -> np.ndarray:
    """The (N, classes) probabilities of a prediction frame."""
    return predictions[list(label_set.class_names)].to_numpy()


def frame_targets(label_set: LabelSet, predictions: pd.DataFrame) -> np.ndarray:
    """The (N, classes) 0/1 targets of a prediction frame."""
    return label_set.to_matrix(predictions["Target"])


def collected_test_frame(model: HPAModule, dataset: RGBYDataset) -> pd.DataFrame:
    """The prediction frame of the images the model saw in its last test run, in dataset order."""
    rows, probabilities = model.collected_test_predictions()
    order = np.argsort(rows, kind="stable")
    rows, probabilities = rows[order], probabilities[order]
    return prediction_frame(model.label_set, dataset.ids[rows], dataset.labels[rows], probabilities)


def write_prediction_artifacts(
    run_dir: RunDir, label_set: LabelSet, predictions: pd.DataFrame, decisions: np.ndarray
) -> pd.DataFrame:
    """Write the test predictions and the per-class report of the 0/1 ``decisions``; return the
    report."""
    run_dir.write_test_predictions(predictions, label_set)
    report = per_class_report(label_set, frame_targets(label_set, predictions), decisions)
    run_dir.write_test_per_class(report)
    return report


def write_test_artifacts(
    run_dir: RunDir, model: HPAModule, dataset: RGBYDataset
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write the test predictions of the model's last test run and their per-class report; return
    both tables."""
    predictions = collected_test_frame(model, dataset)
    decisions = binarize(
        frame_probabilities(model.label_set, predictions),
        model.class_thresholds.cpu().numpy(),
        model.hparams.ensure_one_label,
    )
    return predictions, write_prediction_artifacts(run_dir, model.label_set, predictions, decisions)
