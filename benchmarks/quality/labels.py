"""Multilabel targets with the real Kaggle class frequencies and labels-per-image distribution.

An image's number of labels k is drawn from the real distribution; its k classes are the k
largest of log(w_c) + Gumbel noise (Plackett-Luce: drawn one after another without replacement,
each with probability proportional to w_c). The weights w are calibrated once, by fixed-point
iteration on a fixed Monte-Carlo sample, so that each class's share of images matches its real
share.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from hpa.core.labels import HPA2018
from hpa.data.synthetic.labels import (
    KAGGLE_CLASS_COUNTS,
    KAGGLE_LABELS_PER_IMAGE,
    NUM_KAGGLE_TRAIN_IMAGES,
)

_CALIBRATION_DRAWS = 60_000
_CALIBRATION_ROUNDS = 40


def real_class_rates() -> np.ndarray:
    """The share of real train images holding each class (28 values)."""
    return np.asarray(KAGGLE_CLASS_COUNTS, dtype=np.float64) / NUM_KAGGLE_TRAIN_IMAGES


def _label_count_distribution() -> tuple[np.ndarray, np.ndarray]:
    counts = np.array(sorted(KAGGLE_LABELS_PER_IMAGE))
    shares = np.array([KAGGLE_LABELS_PER_IMAGE[k] for k in counts], dtype=np.float64)
    return counts, shares / shares.sum()


def _top_k_rows(keys: np.ndarray, label_counts: np.ndarray) -> np.ndarray:
    """Multi-hot rows holding the ``label_counts[i]`` largest keys of each row ``i``."""
    ranks = np.argsort(np.argsort(-keys, axis=1), axis=1)
    return (ranks < label_counts[:, None]).astype(np.uint8)


@lru_cache(maxsize=1)
def calibrated_log_weights() -> np.ndarray:
    """log w such that Plackett-Luce top-k draws hold each class at its real rate."""
    rng = np.random.default_rng(20180601)  # fixed: the calibration is part of the generator
    counts, shares = _label_count_distribution()
    label_counts = rng.choice(counts, size=_CALIBRATION_DRAWS, p=shares)
    gumbel = rng.gumbel(size=(_CALIBRATION_DRAWS, HPA2018.num_classes))
    # The real rates sum to the mean label count, so they are reachable by the top-k draws.
    target = real_class_rates() * label_counts.mean() / real_class_rates().sum()
    log_weights = np.log(target)
    for _ in range(_CALIBRATION_ROUNDS):
        achieved = _top_k_rows(log_weights + gumbel, label_counts).mean(axis=0)
        log_weights += np.log(target / np.maximum(achieved, 0.5 / _CALIBRATION_DRAWS))
        log_weights -= log_weights.max()
    return log_weights


def draw_labels(rng: np.random.Generator) -> np.ndarray:
    """One image's multi-hot label vector (28 uint8)."""
    counts, shares = _label_count_distribution()
    label_count = rng.choice(counts, p=shares)
    keys = calibrated_log_weights() + rng.gumbel(size=HPA2018.num_classes)
    return _top_k_rows(keys[None, :], np.array([label_count]))[0]
