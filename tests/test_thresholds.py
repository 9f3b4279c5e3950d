"""Per-class threshold search, binarisation, and the thresholds JSON file."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from sklearn.metrics import f1_score

from hpa.errors import HPAInputError
from hpa.evaluation.thresholds import (
    DEFAULT_CANDIDATES,
    binarize,
    load_thresholds,
    save_thresholds,
    search_thresholds,
)
from hpa.labels import NUM_CLASSES


def _separable(rng: np.random.Generator, n: int = 400) -> tuple[np.ndarray, np.ndarray, list]:
    """Class k: negatives in [0, low_k], positives in [high_k, 1], both ends attained.

    A threshold t separates the class perfectly exactly when low_k <= t < high_k. The bands sit
    between grid points (x.xx5) and straddle 0.5 for some classes. Returns probabilities,
    targets and the (low, high) band of each class.
    """
    targets = (rng.random((n, NUM_CLASSES)) < 0.3).astype(np.uint8)
    targets[0], targets[1] = 0, 1
    bands = []
    probabilities = np.empty((n, NUM_CLASSES))
    for k in range(NUM_CLASSES):
        low = 0.105 + 0.025 * k
        high = low + 0.15
        bands.append((low, high))
        negatives = rng.uniform(0.0, low, n)
        positives = rng.uniform(high, 1.0, n)
        negatives[0], positives[1] = low, high
        probabilities[:, k] = np.where(targets[:, k] == 1, positives, negatives)
    return probabilities, targets, bands


def test_separable_classes_get_a_threshold_in_the_optimal_band_with_f1_one():
    rng = np.random.default_rng(0)
    probabilities, targets, bands = _separable(rng)
    thresholds = search_thresholds(probabilities, targets)
    assert thresholds.shape == (NUM_CLASSES,)
    for k, (low, high) in enumerate(bands):
        assert low <= thresholds[k] < high, (k, thresholds[k], low, high)
        optimal = DEFAULT_CANDIDATES[(DEFAULT_CANDIDATES >= low) & (DEFAULT_CANDIDATES < high)]
        assert thresholds[k] == optimal[np.argmin(np.abs(optimal - 0.5))]  # tie -> closest to 0.5
    predictions = binarize(probabilities, thresholds, ensure_one_label=False)
    per_class = f1_score(targets, predictions, average=None, zero_division=0)
    np.testing.assert_allclose(per_class, 1.0)
    assert f1_score(targets, binarize(probabilities, 0.5, False), average="macro") < 1.0


def test_ties_go_to_the_candidate_closest_to_one_half():
    probabilities = np.zeros((4, NUM_CLASSES))
    targets = np.zeros((4, NUM_CLASSES), dtype=np.uint8)
    # Class 0: negatives at 0.1, positives at 0.9 -> every threshold in [0.1, 0.9) is optimal.
    probabilities[:, 0] = [0.1, 0.1, 0.9, 0.9]
    targets[:, 0] = [0, 0, 1, 1]
    # Class 1: separable band [0.1, 0.3) entirely below 0.5 -> the top of the band wins.
    probabilities[:, 1] = [0.1, 0.1, 0.3, 0.3]
    targets[:, 1] = [0, 0, 1, 1]
    # Class 2: band [0.7, 0.9) above 0.5 -> the bottom of the band wins.
    probabilities[:, 2] = [0.7, 0.7, 0.9, 0.9]
    targets[:, 2] = [0, 0, 1, 1]
    thresholds = search_thresholds(probabilities, targets)
    assert thresholds[0] == pytest.approx(0.5)
    assert thresholds[1] == pytest.approx(0.29)
    assert thresholds[2] == pytest.approx(0.7)


def test_equidistant_ties_take_the_lower_candidate():
    probabilities = np.zeros((2, NUM_CLASSES))
    targets = np.zeros((2, NUM_CLASSES), dtype=np.uint8)
    probabilities[:, 0] = [0.2, 0.8]
    targets[:, 0] = [0, 1]
    thresholds = search_thresholds(probabilities, targets, candidates=np.array([0.6, 0.4]))
    assert thresholds[0] == pytest.approx(0.4)


def test_classes_without_enough_positives_get_the_fallback():
    rng = np.random.default_rng(1)
    probabilities, targets, _ = _separable(rng, n=200)
    targets[:, 3] = 0
    targets[:, 5] = 0
    targets[np.argsort(probabilities[:, 5])[-2:], 5] = 1  # two separable positives, < 3
    thresholds = search_thresholds(probabilities, targets, fallback=0.37, min_positives=3)
    assert thresholds[3] == 0.37
    assert thresholds[5] == 0.37
    tuned = np.delete(np.arange(NUM_CLASSES), [3, 5])
    assert np.all(thresholds[tuned] != 0.37)
    # Default min_positives=1: only the absent class falls back.
    default = search_thresholds(probabilities, targets)
    assert default[3] == 0.5
    predicted_5 = probabilities[:, 5] > default[5]
    assert f1_score(targets[:, 5], predicted_5) == 1.0  # two positives are enough to tune


def test_tuned_thresholds_beat_one_half_on_noisy_data():
    rng = np.random.default_rng(2)
    n = 1500
    rates = np.linspace(0.02, 0.4, NUM_CLASSES)
    targets = (rng.random((n, NUM_CLASSES)) < rates).astype(np.uint8)
    # Badly calibrated scores: positives centred at a class-dependent, often low, value.
    centres = np.linspace(0.2, 0.8, NUM_CLASSES)
    logits = rng.normal(0, 1, (n, NUM_CLASSES)) + 2.0 * targets + (centres - 0.5) * 4 - 1.0
    probabilities = 1 / (1 + np.exp(-logits))
    thresholds = search_thresholds(probabilities, targets)
    tuned = f1_score(targets, binarize(probabilities, thresholds, False), average="macro")
    default = f1_score(targets, binarize(probabilities, 0.5, False), average="macro")
    assert tuned >= default
    assert tuned > default + 0.02  # the scores are miscalibrated, so tuning must help
    # The per-class F1 at the chosen threshold is the best over the whole grid (sklearn check).
    for k in (0, 13, 27):
        best = max(
            f1_score(targets[:, k], probabilities[:, k] > t, zero_division=0)
            for t in DEFAULT_CANDIDATES
        )
        chosen = f1_score(targets[:, k], probabilities[:, k] > thresholds[k], zero_division=0)
        assert chosen == pytest.approx(best)


def test_search_is_fast_on_5000_images():
    rng = np.random.default_rng(3)
    probabilities = rng.random((5000, NUM_CLASSES))
    targets = (rng.random((5000, NUM_CLASSES)) < 0.1).astype(np.uint8)
    start = time.perf_counter()
    thresholds = search_thresholds(probabilities, targets)
    assert time.perf_counter() - start < 5.0
    assert np.all((thresholds >= 0.05) & (thresholds <= 0.95))


def test_search_rejects_bad_shapes_and_candidates():
    with pytest.raises(ValueError):
        search_thresholds(np.zeros((3, 5)), np.zeros((3, 5)))
    with pytest.raises(ValueError):
        search_thresholds(np.zeros((3, NUM_CLASSES)), np.zeros((4, NUM_CLASSES)))
    with pytest.raises(ValueError):
        search_thresholds(np.zeros((3, NUM_CLASSES)), np.zeros((3, NUM_CLASSES)), np.array([1.5]))


def test_binarize_thresholds_and_ensures_one_label():
    probabilities = np.full((3, NUM_CLASSES), 0.1)
    probabilities[0, 4] = 0.9
    probabilities[1, 7] = 0.3  # below every threshold, but the most probable class of row 1
    probabilities[2, 2] = 0.45
    thresholds = np.full(NUM_CLASSES, 0.5)
    thresholds[2] = 0.4
    strict = binarize(probabilities, thresholds, ensure_one_label=False)
    assert strict.dtype == np.uint8
    assert strict.sum(axis=1).tolist() == [1, 0, 1]
    assert strict[0, 4] == 1 and strict[2, 2] == 1
    filled = binarize(probabilities, thresholds)
    assert filled.sum(axis=1).tolist() == [1, 1, 1]
    assert filled[1, 7] == 1
    np.testing.assert_array_equal(np.delete(filled, 1, axis=0), np.delete(strict, 1, axis=0))
    # Strictly above: a probability equal to its threshold is not predicted.
    assert binarize(np.full((1, NUM_CLASSES), 0.5), 0.5, ensure_one_label=False).sum() == 0
    with pytest.raises(ValueError):
        binarize(probabilities, np.full(5, 0.5))


def test_save_load_round_trip(tmp_path):
    thresholds = np.linspace(0.05, 0.95, NUM_CLASSES)
    path = tmp_path / "sub" / "thresholds.json"
    save_thresholds(path, thresholds)
    np.testing.assert_array_equal(load_thresholds(path), thresholds)
    data = json.loads(path.read_text())
    assert data["class_names"]["0"] == "Nucleoplasm"
    assert data["thresholds"]["27"] == pytest.approx(0.95)
    assert [p.name for p in path.parent.iterdir()] == ["thresholds.json"]  # no temp files left


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        "[]",
        json.dumps({"thresholds": {str(i): 0.5 for i in range(NUM_CLASSES - 1)}}),
        json.dumps({"thresholds": {**{str(i): 0.5 for i in range(NUM_CLASSES)}, "3": 1.5}}),
        json.dumps({"thresholds": {**{str(i): 0.5 for i in range(NUM_CLASSES)}, "3": "0.5"}}),
        json.dumps({"thresholds": {**{str(i): 0.5 for i in range(NUM_CLASSES)}, "3": None}}),
        json.dumps({"thresholds": {str(i): 0.5 for i in range(NUM_CLASSES)}}).replace(
            "0.5}", "NaN}"
        ),
    ],
)
def test_load_rejects_bad_files_naming_them(tmp_path, content):
    path = tmp_path / "bad_thresholds.json"
    path.write_text(content)
    with pytest.raises(HPAInputError, match="bad_thresholds.json"):
        load_thresholds(path)


def test_load_missing_file_and_save_invalid(tmp_path):
    with pytest.raises(HPAInputError, match="missing.json"):
        load_thresholds(tmp_path / "missing.json")
    with pytest.raises(HPAInputError):
        save_thresholds(tmp_path / "t.json", np.full(NUM_CLASSES, np.inf))
    with pytest.raises(HPAInputError):
        save_thresholds(tmp_path / "t.json", np.full(3, 0.5))
    assert not (tmp_path / "t.json").exists()
