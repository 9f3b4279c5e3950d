"""Run-directory artifacts shared by the entry points: test predictions and per-class reports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hpa.data.dataset import RGBYDataset
from hpa.evaluation.metrics import per_class_report
from hpa.io import write_csv
from hpa.labels import CLASS_NAMES, format_target, targets_to_matrix
from hpa.models.module import HPAModule


def prediction_frame(
    ids: np.ndarray, labels: np.ndarray, probabilities: np.ndarray
) -> pd.DataFrame:
    """``Id``, one probability column per class name and the true ``Target``."""
    frame = pd.DataFrame(probabilities, columns=list(CLASS_NAMES))
    frame.insert(0, "Id", ids)
    frame["Target"] = [format_target(row) for row in labels]
    return frame


def collected_test_frame(model: HPAModule, dataset: RGBYDataset) -> pd.DataFrame:
    """The prediction frame of the images the model saw in its last test run, in dataset order."""
    rows, probabilities = model.collected_test_predictions()
    order = np.argsort(rows, kind="stable")
    rows, probabilities = rows[order], probabilities[order]
    return prediction_frame(dataset.ids[rows], dataset.labels[rows], probabilities)


def write_prediction_artifacts(
    output_dir: Path, predictions: pd.DataFrame, decisions: np.ndarray
) -> pd.DataFrame:
    """Write ``test_predictions.csv`` and the per-class report of the 0/1 ``decisions``,
    ``test_per_class.csv``; return the report."""
    write_csv(output_dir / "test_predictions.csv", predictions)
    report = per_class_report(targets_to_matrix(predictions["Target"]), decisions)
    write_csv(output_dir / "test_per_class.csv", report)
    return report


def write_test_artifacts(
    output_dir: Path, model: HPAModule, dataset: RGBYDataset
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write ``test_predictions.csv`` and ``test_per_class.csv``; return both tables."""
    predictions = collected_test_frame(model, dataset)
    probabilities = predictions[list(CLASS_NAMES)].to_numpy()
    decisions = model.decide(torch.from_numpy(probabilities)).numpy().astype(np.uint8)
    return predictions, write_prediction_artifacts(output_dir, predictions, decisions)
