"""Per-class decision thresholds tuned on validation predictions, and applying them.

The Kaggle score is the macro F1, so each class's threshold can be tuned on its own: the one that
maximises that class's F1 on the validation probabilities. A class is predicted when its
probability is strictly above its threshold, as in ``hpa.evaluation.metrics``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from hpa.errors import HPAInputError
from hpa.io import write_json
from hpa.labels import CLASS_NAMES, NUM_CLASSES

DEFAULT_CANDIDATES = np.round(np.linspace(0.05, 0.95, 91), 2)
"""A fixed 0.01 grid rather than the unique validation probabilities: rare classes (a handful of
positives) would otherwise get a threshold fitted exactly to one validation score, which does not
transfer to the test set; a coarse grid also keeps the saved thresholds readable."""

_TIE_TOLERANCE = 1e-12


def _check_predictions(probabilities: np.ndarray, targets: np.ndarray) -> None:
    if probabilities.ndim != 2 or probabilities.shape[1] != NUM_CLASSES:
        raise ValueError(f"probabilities must be (N, {NUM_CLASSES}), got {probabilities.shape}")
    if targets.shape != probabilities.shape:
        raise ValueError(
            f"targets must match probabilities {probabilities.shape}, got {targets.shape}"
        )


def _check_candidates(candidates: np.ndarray) -> np.ndarray:
    candidates = np.unique(np.asarray(candidates, dtype=np.float64))  # sorted, 1-D
    if candidates.size == 0 or not np.all((candidates >= 0) & (candidates <= 1)):
        raise ValueError(f"candidates must be non-empty values in [0, 1], got {candidates}")
    return candidates


def f1_per_candidate(
    scores: np.ndarray, positives: np.ndarray, candidates: np.ndarray
) -> np.ndarray:
    """One class's F1 at each candidate threshold (sklearn semantics, zero_division=0).

    ``scores`` and ``positives`` are (N,) probabilities and booleans; returns (K,) floats.
    """
    predicted = scores[:, None] > candidates[None, :]  # (N, K)
    true_positives = (predicted & positives[:, None]).sum(axis=0)
    predicted_count = predicted.sum(axis=0)
    denominator = predicted_count + positives.sum()  # 2TP + FP + FN
    return np.where(denominator > 0, 2 * true_positives / np.maximum(denominator, 1), 0.0)


def _best_candidate(f1: np.ndarray, candidates: np.ndarray) -> float:
    """The candidate of highest F1; ties go to the one closest to 0.5, then to the lower one."""
    tied = np.flatnonzero(f1 >= f1.max() - _TIE_TOLERANCE)
    tied_values = candidates[tied]
    order = np.lexsort((tied_values, np.abs(tied_values - 0.5)))
    return float(tied_values[order[0]])


def search_thresholds(
    probabilities: np.ndarray,
    targets: np.ndarray,
    candidates: np.ndarray | None = None,
    fallback: float = 0.5,
    min_positives: int = 1,
) -> np.ndarray:
    """The F1-maximising threshold of each class on (N, 28) probabilities and 0/1 targets.

    Each class takes the candidate (default ``DEFAULT_CANDIDATES``) that maximises its F1, ties
    broken toward 0.5 (the untuned default, so a flat F1 curve leaves the threshold where it was)
    and then toward the lower value. A class with fewer than ``min_positives`` positives in
    ``targets`` has no meaningful optimum and gets ``fallback``. Returns 28 float64 values.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    targets = np.asarray(targets)
    _check_predictions(probabilities, targets)
    candidates = _check_candidates(DEFAULT_CANDIDATES if candidates is None else candidates)
    positives = targets > 0.5
    thresholds = np.full(NUM_CLASSES, float(fallback))
    for class_id in range(NUM_CLASSES):
        if positives[:, class_id].sum() < min_positives:
            continue
        f1 = f1_per_candidate(probabilities[:, class_id], positives[:, class_id], candidates)
        thresholds[class_id] = _best_candidate(f1, candidates)
    return thresholds


def binarize(
    probabilities: np.ndarray,
    thresholds: float | np.ndarray,
    ensure_one_label: bool = True,
) -> np.ndarray:
    """(N, 28) uint8 predictions: 1 where the probability is strictly above the class threshold.

    With ``ensure_one_label`` a row with nothing above threshold gets its most probable class,
    since every HPA image has at least one location.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape[1] != NUM_CLASSES:
        raise ValueError(f"probabilities must be (N, {NUM_CLASSES}), got {probabilities.shape}")
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if thresholds.shape not in ((), (NUM_CLASSES,)):
        raise ValueError(f"thresholds must be a float or {NUM_CLASSES} values, got {thresholds}")
    predictions = (probabilities > thresholds).astype(np.uint8)
    if ensure_one_label:
        empty = np.flatnonzero(predictions.sum(axis=1) == 0)
        predictions[empty, probabilities[empty].argmax(axis=1)] = 1
    return predictions


def save_thresholds(path: str | Path, thresholds: np.ndarray) -> None:
    """Write ``{"thresholds": {"0": t0, ...}, "class_names": {"0": name, ...}}`` atomically."""
    values = _validated(thresholds, source="thresholds to save")
    write_json(
        path,
        {
            "thresholds": {str(i): float(value) for i, value in enumerate(values)},
            "class_names": {str(i): name for i, name in enumerate(CLASS_NAMES)},
        },
    )


def load_thresholds(path: str | Path) -> np.ndarray:
    """Read thresholds written by ``save_thresholds``; HPAInputError naming the file if invalid."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise HPAInputError(f"{path}: cannot read thresholds JSON ({error})") from error
    entries = data.get("thresholds") if isinstance(data, dict) else None
    expected_keys = {str(i) for i in range(NUM_CLASSES)}
    if not isinstance(entries, dict) or set(entries) != expected_keys:
        raise HPAInputError(
            f'{path}: expected a "thresholds" object with keys "0".."{NUM_CLASSES - 1}"'
        )
    values = [entries[str(i)] for i in range(NUM_CLASSES)]
    # JSON strings and booleans would pass np.asarray(dtype=float); only numbers are accepted.
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise HPAInputError(f"{path}: thresholds must be numbers, got {values}")
    return _validated(values, source=str(path))


def _validated(values: object, source: str) -> np.ndarray:
    """28 finite floats in [0, 1], else HPAInputError naming ``source``."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise HPAInputError(f"{source}: thresholds must be numbers ({error})") from error
    if array.shape != (NUM_CLASSES,):
        raise HPAInputError(f"{source}: expected {NUM_CLASSES} thresholds, got shape {array.shape}")
    bad = [i for i, v in enumerate(array) if not (math.isfinite(v) and 0.0 <= v <= 1.0)]
    if bad:
        raise HPAInputError(
            f"{source}: thresholds of classes {bad} are not finite values in [0, 1]"
        )
    return array
