"""Per-class decision thresholds chosen on validation predictions, and applying them.

The Kaggle score is the macro F1, so each class's threshold can be tuned on its own: the one that
maximises that class's F1 on the validation probabilities. A class is predicted when its
probability is strictly above its threshold, as in ``hpa.evaluation.metrics``.

A class with a handful of validation positives gets a tuned threshold fitted to those few
scores, which often does not transfer to the test set. ``decision_thresholds`` therefore offers
policies (``POLICIES``) that lean less on them: ``fixed`` (one value for every class), ``tuned``
(the per-class F1 search), ``rate`` (match the train split's label rate), ``shrunk`` (pull the
tuned value toward the best single threshold, the more so the fewer positives a class has),
``min_positives`` (the single threshold for classes with too few positives) and ``folds`` (tuned
on each of k overlapping parts of the validation split, averaged).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence

import numpy as np

from hpa.core.errors import HPAInputError

DEFAULT_CANDIDATES = np.round(np.linspace(0.05, 0.95, 91), 2)
"""A fixed 0.01 grid rather than the unique validation probabilities: rare classes (a handful of
positives) would otherwise get a threshold fitted exactly to one validation score, which does not
transfer to the test set; a coarse grid also keeps the saved thresholds readable."""

_TIE_TOLERANCE = 1e-12


def _check_predictions(probabilities: np.ndarray, targets: np.ndarray) -> None:
    if probabilities.ndim != 2 or probabilities.shape[1] == 0:
        raise ValueError(f"probabilities must be (N, classes), got {probabilities.shape}")
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
    """The F1-maximising threshold of each class on (N, classes) probabilities and 0/1 targets.

    Each class takes the candidate (default ``DEFAULT_CANDIDATES``) that maximises its F1, ties
    broken toward 0.5 (the untuned default, so a flat F1 curve leaves the threshold where it was)
    and then toward the lower value. A class with fewer than ``min_positives`` positives in
    ``targets`` has no meaningful optimum and gets ``fallback``. Returns one float64 value per class.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    targets = np.asarray(targets)
    _check_predictions(probabilities, targets)
    candidates = _check_candidates(DEFAULT_CANDIDATES if candidates is None else candidates)
    positives = targets > 0.5
    num_classes = probabilities.shape[1]
    thresholds = np.full(num_classes, float(fallback))
    for class_id in range(num_classes):
        if positives[:, class_id].sum() < min_positives:
            continue
        f1 = f1_per_candidate(probabilities[:, class_id], positives[:, class_id], candidates)
        thresholds[class_id] = _best_candidate(f1, candidates)
    return thresholds


def global_threshold(
    probabilities: np.ndarray, targets: np.ndarray, candidates: np.ndarray | None = None
) -> float:
    """The one candidate threshold (default ``DEFAULT_CANDIDATES``) that, used for every class,
    maximises the macro F1 over the classes; ties as in ``search_thresholds``. A class
    without positives scores 0 at any threshold, so it does not move the choice."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    targets = np.asarray(targets)
    _check_predictions(probabilities, targets)
    candidates = _check_candidates(DEFAULT_CANDIDATES if candidates is None else candidates)
    positives = targets > 0.5
    per_class = [
        f1_per_candidate(probabilities[:, k], positives[:, k], candidates)
        for k in range(probabilities.shape[1])
    ]
    return _best_candidate(np.mean(per_class, axis=0), candidates)


def rate_matched_thresholds(probabilities: np.ndarray, train_label_rate: np.ndarray) -> np.ndarray:
    """Thresholds under which each class is predicted for the share of the rows of
    ``probabilities`` (N, classes) that it holds in the train split (``train_label_rate``, one value a class
    in [0, 1]), as the 2018 winners matched predicted and label rates.

    Class c is predicted for k = round(rate_c * N) rows: its threshold lies midway between its
    k-th and (k+1)-th largest probability; k = 0 gives its largest probability (no row above),
    k = N a value just below its smallest. Rows of equal probability fall on the same side, so
    with ties the count is the nearest they allow. No targets are needed.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    _check_predictions(probabilities, probabilities)
    rates = np.asarray(train_label_rate, dtype=np.float64)
    num_classes = probabilities.shape[1]
    if rates.shape != (num_classes,) or not np.all((rates >= 0) & (rates <= 1)):
        raise ValueError(f"train_label_rate must be {num_classes} values in [0, 1], got {rates}")
    if len(probabilities) == 0:
        raise ValueError("rate matching needs at least one row of probabilities")
    counts = np.rint(rates * len(probabilities)).astype(int)
    return np.array(
        [_threshold_for_count(probabilities[:, k], counts[k]) for k in range(num_classes)]
    )


def _threshold_for_count(scores: np.ndarray, count: int) -> float:
    """A threshold with as near ``count`` of ``scores`` strictly above it as ties allow (the
    fewer rows when two counts are equally near)."""
    values, repeats = np.unique(scores, return_counts=True)
    values, repeats = values[::-1], repeats[::-1]  # descending
    # rows above a cut before values[0], between each pair of values, after values[-1]
    rows_above = np.concatenate([[0], np.cumsum(repeats)])
    cut = int(np.argmin(np.abs(rows_above - count)))
    if cut == 0:
        return float(values[0])
    if cut == len(values):
        return float(max(np.nextafter(values[-1], -np.inf), 0.0))
    return float((values[cut - 1] + values[cut]) / 2)


def shrunk_thresholds(
    probabilities: np.ndarray,
    targets: np.ndarray,
    half_weight_positives: float = 10.0,
    candidates: np.ndarray | None = None,
) -> np.ndarray:
    """Each class's tuned threshold pulled toward the global one (``global_threshold``):

        threshold_c = w_c * tuned_c + (1 - w_c) * global,   w_c = n_c / (n_c + h)

    where n_c is the number of positives of class c in ``targets`` and h is
    ``half_weight_positives``: a class with h positives sits halfway, one with none takes the
    global threshold, one with many nearly its own.
    """
    if not half_weight_positives > 0:
        raise ValueError(f"half_weight_positives must be > 0, got {half_weight_positives!r}")
    common = global_threshold(probabilities, targets, candidates)
    own = search_thresholds(probabilities, targets, candidates, fallback=common)
    positives = (np.asarray(targets) > 0.5).sum(axis=0)
    weight = positives / (positives + float(half_weight_positives))
    return weight * own + (1.0 - weight) * common


def min_positives_thresholds(
    probabilities: np.ndarray,
    targets: np.ndarray,
    min_positives: int = 5,
    candidates: np.ndarray | None = None,
) -> np.ndarray:
    """The tuned threshold of each class with at least ``min_positives`` positives in
    ``targets``; the global one (``global_threshold``) for the others."""
    common = global_threshold(probabilities, targets, candidates)
    return search_thresholds(
        probabilities, targets, candidates, fallback=common, min_positives=min_positives
    )


def fold_averaged_thresholds(
    probabilities: np.ndarray,
    targets: np.ndarray,
    folds: int = 5,
    seed: int = 0,
    fallback: float = 0.5,
    candidates: np.ndarray | None = None,
) -> np.ndarray:
    """The mean of ``folds`` tuned threshold vectors, each searched on the validation rows outside
    one fold (row i is in fold ``permutation(n)[i] % folds``, numpy's ``default_rng(seed)``): one
    noisy positive moves the average by a fraction of what it moves a single search."""
    folds = int(folds)
    if folds < 2 or folds > len(targets):
        raise ValueError(f"folds must be between 2 and the {len(targets)} rows, got {folds}")
    fold_of_row = np.random.default_rng(seed).permutation(len(targets)) % folds
    return average_thresholds(
        [
            search_thresholds(
                probabilities[fold_of_row != k], targets[fold_of_row != k], candidates, fallback
            )
            for k in range(folds)
        ]
    )


def average_thresholds(threshold_vectors: Sequence[np.ndarray]) -> np.ndarray:
    """The class-wise mean of several threshold vectors (e.g. one per fold or ensemble member)."""
    stacked = np.asarray(threshold_vectors, dtype=np.float64)
    if stacked.ndim != 2 or stacked.shape[0] == 0 or stacked.shape[1] == 0:
        raise ValueError(
            f"expected one or more vectors of one threshold per class, got shape {stacked.shape}"
        )
    return stacked.mean(axis=0)


def _fixed_policy(probabilities, targets, train_label_rate, threshold: float = 0.5):
    return np.full(np.shape(probabilities)[1], float(threshold))


def _tuned_policy(probabilities, targets, train_label_rate, threshold=0.5, candidates=None):
    return search_thresholds(probabilities, targets, candidates, fallback=threshold)


def _rate_policy(probabilities, targets, train_label_rate):
    if train_label_rate is None:
        raise ValueError(
            "threshold policy 'rate' needs train_label_rate (the train split's label rate of each class)"
        )
    return rate_matched_thresholds(probabilities, train_label_rate)


def _shrunk_policy(
    probabilities, targets, train_label_rate, half_weight_positives=10.0, candidates=None
):
    return shrunk_thresholds(probabilities, targets, half_weight_positives, candidates)


def _min_positives_policy(
    probabilities, targets, train_label_rate, min_positives=5, candidates=None
):
    return min_positives_thresholds(probabilities, targets, min_positives, candidates)


def _folds_policy(
    probabilities, targets, train_label_rate, folds=5, seed=0, threshold=0.5, candidates=None
):
    return fold_averaged_thresholds(probabilities, targets, folds, seed, threshold, candidates)


_POLICY_FUNCTIONS = {
    "fixed": _fixed_policy,
    "tuned": _tuned_policy,
    "rate": _rate_policy,
    "shrunk": _shrunk_policy,
    "min_positives": _min_positives_policy,
    "folds": _folds_policy,
}
POLICIES: tuple[str, ...] = tuple(_POLICY_FUNCTIONS)


def policy_parameters(policy: str) -> tuple[str, ...]:
    """The keyword parameters that ``decision_thresholds`` accepts for ``policy``;
    HPAInputError for an unknown policy (check a config with it before training)."""
    if policy not in _POLICY_FUNCTIONS:
        raise HPAInputError(
            f"unknown threshold policy {policy!r}; choose one of {', '.join(POLICIES)}"
        )
    names = list(inspect.signature(_POLICY_FUNCTIONS[policy]).parameters)
    return tuple(names[3:])  # after probabilities, targets, train_label_rate


def check_policy(policy: str, params: Mapping | None = None) -> None:
    """HPAInputError for an unknown policy or a parameter it does not take: a config is checked
    before training, not after it."""
    accepted = policy_parameters(policy)
    unknown = sorted(set(params or {}) - set(accepted))
    if unknown:
        raise HPAInputError(
            f"threshold policy {policy!r} takes {', '.join(accepted) or 'no parameters'}, "
            f"not {', '.join(unknown)}"
        )


def decision_thresholds(
    policy: str,
    val_probabilities: np.ndarray,
    val_targets: np.ndarray,
    train_label_rate: np.ndarray | None = None,
    **params,
) -> np.ndarray:
    """One decision threshold per class, chosen by ``policy`` on validation probabilities and targets.

    ``fixed``: ``threshold`` (0.5) for every class. ``tuned``: ``search_thresholds`` with
    ``threshold`` as the fallback (what ``hpa.train`` does with ``model.thresholds=tuned``).
    ``rate``: ``rate_matched_thresholds`` (needs ``train_label_rate``). ``shrunk``:
    ``shrunk_thresholds`` (``half_weight_positives``). ``min_positives``:
    ``min_positives_thresholds`` (``min_positives``). ``candidates`` sets the grid of the
    searching policies. HPAInputError for an unknown policy or parameter.
    """
    check_policy(policy, params)
    probabilities = np.asarray(val_probabilities, dtype=np.float64)
    targets = np.asarray(val_targets)
    _check_predictions(probabilities, targets)
    return _POLICY_FUNCTIONS[policy](probabilities, targets, train_label_rate, **params)


def binarize(
    probabilities: np.ndarray,
    thresholds: float | np.ndarray,
    ensure_one_label: bool = True,
) -> np.ndarray:
    """(N, classes) uint8 predictions: 1 where the probability is strictly above the class threshold.

    With ``ensure_one_label`` a row with nothing above threshold gets its most probable class,
    since every HPA image has at least one location.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape[1] == 0:
        raise ValueError(f"probabilities must be (N, classes), got {probabilities.shape}")
    num_classes = probabilities.shape[1]
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if thresholds.shape not in ((), (num_classes,)):
        raise ValueError(f"thresholds must be a float or {num_classes} values, got {thresholds}")
    predictions = (probabilities > thresholds).astype(np.uint8)
    if ensure_one_label:
        empty = np.flatnonzero(predictions.sum(axis=1) == 0)
        predictions[empty, probabilities[empty].argmax(axis=1)] = 1
    return predictions
