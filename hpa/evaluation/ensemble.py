"""Ensembles of checkpoints (k folds, seeds): the mean of the members' probabilities, decided at
the mean of their per-class thresholds. Shared by ``hpa.eval`` (scored on the test split) and
``hpa.predict`` (a submission)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hpa.core.errors import HPAInputError
from hpa.core.labels import LabelSet


@dataclass
class Member:
    """One checkpoint's outputs on the same images as the other members: its probabilities
    (N x classes, in the ensemble's image order), per-class thresholds and, when it was tested, its
    own metrics."""

    path: Path
    probabilities: np.ndarray
    thresholds: np.ndarray
    metrics: dict[str, float] | None = None


def average(members: Sequence[Member]) -> tuple[np.ndarray, np.ndarray]:
    """(mean probabilities, mean thresholds) of the members."""
    if not members:
        raise ValueError("an ensemble needs at least one member")
    shapes = {member.probabilities.shape for member in members}
    if len(shapes) != 1:
        raise HPAInputError(f"ensemble members predicted different numbers of images: {shapes}")
    probabilities = np.mean([member.probabilities for member in members], axis=0)
    thresholds = np.mean([member.thresholds for member in members], axis=0)
    return probabilities, thresholds


def average_frames(label_set: LabelSet, frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """The mean of prediction frames (``Id``, class columns, ``Target``) of the same images."""
    # imported here: hpa.evaluation.predictions imports the training stack, which ``average``
    # (the ONNX backend of hpa.predict) does without
    from hpa.evaluation.predictions import frame_probabilities

    first = frames[0]
    for frame in frames[1:]:
        if list(frame["Id"]) != list(first["Id"]):
            raise HPAInputError("ensemble members predicted different test images")
    averaged = first.copy()
    probabilities = [frame_probabilities(label_set, frame) for frame in frames]
    averaged[list(label_set.class_names)] = np.mean(probabilities, axis=0)
    return averaged
