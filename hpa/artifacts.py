"""Run-directory artifacts shared by the entry points: test predictions and per-class reports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hpa.data.dataset import RGBYDataset
from hpa.io import write_csv
from hpa.labels import CLASS_NAMES, format_target, targets_to_matrix
from hpa.metrics import per_class_report
from hpa.models.module import HPAModule


def collected_test_frame(model: HPAModule, dataset: RGBYDataset) -> pd.DataFrame:
    """``Id``, one probability column per class name and the true ``Target``, in dataset order,
    for the images the model saw in its last test run."""
    rows, probabilities = model.collected_test_predictions()
    order = np.argsort(rows, kind="stable")
    rows, probabilities = rows[order], probabilities[order]
    frame = pd.DataFrame(probabilities, columns=list(CLASS_NAMES))
    frame.insert(0, "Id", dataset.ids[rows])
    frame["Target"] = [format_target(dataset.labels[row]) for row in rows]
    return frame


def write_test_artifacts(
    output_dir: Path, model: HPAModule, dataset: RGBYDataset
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write ``test_predictions.csv`` and ``test_per_class.csv``; return both tables."""
    predictions = collected_test_frame(model, dataset)
    write_csv(output_dir / "test_predictions.csv", predictions)
    targets = targets_to_matrix(predictions["Target"])
    probabilities = predictions[list(CLASS_NAMES)].to_numpy()
    predicted = model.decide(torch.from_numpy(probabilities)).numpy().astype(np.uint8)
    report = per_class_report(targets, predicted)
    write_csv(output_dir / "test_per_class.csv", report)
    return predictions, report
