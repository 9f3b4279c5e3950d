"""Per-class threshold search, binarisation, and the thresholds JSON file."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from sklearn.metrics import f1_score

from hpa.core.errors import HPAInputError
from hpa.core.labels import HPA2018, HPA2021
from hpa.core.thresholds_file import load_thresholds, save_thresholds
from hpa.evaluation.thresholds import (
    DEFAULT_CANDIDATES,
    POLICIES,
    average_thresholds,
    binarize,
    decision_thresholds,
    fold_averaged_thresholds,
    global_threshold,
    min_positives_thresholds,
    policy_parameters,
    rate_matched_thresholds,
    search_thresholds,
    shrunk_thresholds,
)


def _separable(rng: np.random.Generator, n: int = 400) -> tuple[np.ndarray, np.ndarray, list]:
    """Class k: negatives in [0, low_k], positives in [high_k, 1], both ends attained.

    A threshold t separates the class perfectly exactly when low_k <= t < high_k. The bands sit
    between grid points (x.xx5) and straddle 0.5 for some classes. Returns probabilities,
    targets and the (low, high) band of each class.
    """
    targets = (rng.random((n, HPA2018.num_classes)) < 0.3).astype(np.uint8)
    targets[0], targets[1] = 0, 1
    bands = []
    probabilities = np.empty((n, HPA2018.num_classes))
    for k in range(HPA2018.num_classes):
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
    assert thresholds.shape == (HPA2018.num_classes,)
    for k, (low, high) in enumerate(bands):
        assert low <= thresholds[k] < high, (k, thresholds[k], low, high)
        optimal = DEFAULT_CANDIDATES[(DEFAULT_CANDIDATES >= low) & (DEFAULT_CANDIDATES < high)]
        assert thresholds[k] == optimal[np.argmin(np.abs(optimal - 0.5))]  # tie -> closest to 0.5
    predictions = binarize(probabilities, thresholds, ensure_one_label=False)
    per_class = f1_score(targets, predictions, average=None, zero_division=0)
    np.testing.assert_allclose(per_class, 1.0)
    assert f1_score(targets, binarize(probabilities, 0.5, False), average="macro") < 1.0


def test_ties_go_to_the_candidate_closest_to_one_half():
    probabilities = np.zeros((4, HPA2018.num_classes))
    targets = np.zeros((4, HPA2018.num_classes), dtype=np.uint8)
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
    probabilities = np.zeros((2, HPA2018.num_classes))
    targets = np.zeros((2, HPA2018.num_classes), dtype=np.uint8)
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
    tuned = np.delete(np.arange(HPA2018.num_classes), [3, 5])
    assert np.all(thresholds[tuned] != 0.37)
    # Default min_positives=1: only the absent class falls back.
    default = search_thresholds(probabilities, targets)
    assert default[3] == 0.5
    predicted_5 = probabilities[:, 5] > default[5]
    assert f1_score(targets[:, 5], predicted_5) == 1.0  # two positives are enough to tune


def test_tuned_thresholds_beat_one_half_on_noisy_data():
    rng = np.random.default_rng(2)
    n = 1500
    rates = np.linspace(0.02, 0.4, HPA2018.num_classes)
    targets = (rng.random((n, HPA2018.num_classes)) < rates).astype(np.uint8)
    # Badly calibrated scores: positives centred at a class-dependent, often low, value.
    centres = np.linspace(0.2, 0.8, HPA2018.num_classes)
    logits = rng.normal(0, 1, (n, HPA2018.num_classes)) + 2.0 * targets + (centres - 0.5) * 4 - 1.0
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
    probabilities = rng.random((5000, HPA2018.num_classes))
    targets = (rng.random((5000, HPA2018.num_classes)) < 0.1).astype(np.uint8)
    start = time.perf_counter()
    thresholds = search_thresholds(probabilities, targets)
    assert time.perf_counter() - start < 5.0
    assert np.all((thresholds >= 0.05) & (thresholds <= 0.95))


def test_search_rejects_bad_shapes_and_candidates():
    # any number of classes is a label set's; a matrix without classes or rows of classes is not
    with pytest.raises(ValueError):
        search_thresholds(np.zeros(5), np.zeros(5))
    with pytest.raises(ValueError):
        search_thresholds(np.zeros((3, 0)), np.zeros((3, 0)))
    with pytest.raises(ValueError):
        search_thresholds(np.zeros((3, HPA2018.num_classes)), np.zeros((4, HPA2018.num_classes)))
    with pytest.raises(ValueError):
        search_thresholds(
            np.zeros((3, HPA2018.num_classes)), np.zeros((3, HPA2018.num_classes)), np.array([1.5])
        )


def test_binarize_thresholds_and_ensures_one_label():
    probabilities = np.full((3, HPA2018.num_classes), 0.1)
    probabilities[0, 4] = 0.9
    probabilities[1, 7] = 0.3  # below every threshold, but the most probable class of row 1
    probabilities[2, 2] = 0.45
    thresholds = np.full(HPA2018.num_classes, 0.5)
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
    assert binarize(np.full((1, HPA2018.num_classes), 0.5), 0.5, ensure_one_label=False).sum() == 0
    with pytest.raises(ValueError):
        binarize(probabilities, np.full(5, 0.5))


def test_save_load_round_trip(tmp_path):
    thresholds = np.linspace(0.05, 0.95, HPA2018.num_classes)
    path = tmp_path / "sub" / "thresholds.json"
    save_thresholds(path, thresholds, HPA2018)
    np.testing.assert_array_equal(load_thresholds(path, HPA2018), thresholds)
    data = json.loads(path.read_text())
    assert data["class_names"]["0"] == "Nucleoplasm"
    assert data["thresholds"]["27"] == pytest.approx(0.95)
    assert [p.name for p in path.parent.iterdir()] == ["thresholds.json"]  # no temp files left


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        "[]",
        json.dumps({"thresholds": {str(i): 0.5 for i in range(HPA2018.num_classes - 1)}}),
        json.dumps({"thresholds": {**{str(i): 0.5 for i in range(HPA2018.num_classes)}, "3": 1.5}}),
        json.dumps(
            {"thresholds": {**{str(i): 0.5 for i in range(HPA2018.num_classes)}, "3": "0.5"}}
        ),
        json.dumps(
            {"thresholds": {**{str(i): 0.5 for i in range(HPA2018.num_classes)}, "3": None}}
        ),
        json.dumps({"thresholds": {str(i): 0.5 for i in range(HPA2018.num_classes)}}).replace(
            "0.5}", "NaN}"
        ),
    ],
)
def test_load_rejects_bad_files_naming_them(tmp_path, content):
    path = tmp_path / "bad_thresholds.json"
    path.write_text(content)
    with pytest.raises(HPAInputError, match="bad_thresholds.json"):
        load_thresholds(path, HPA2018)


def test_thresholds_of_one_label_set_are_refused_for_another(tmp_path):
    path = tmp_path / "thresholds.json"
    save_thresholds(path, np.full(HPA2018.num_classes, 0.3), HPA2018)
    with pytest.raises(HPAInputError, match="keys"):
        load_thresholds(path, HPA2021)
    renamed = HPA2018.__class__(name="renamed", class_names=[f"c{i}" for i in range(28)])
    with pytest.raises(HPAInputError, match="class names are not those of the label set renamed"):
        load_thresholds(path, renamed)
    np.testing.assert_array_equal(load_thresholds(path), np.full(HPA2018.num_classes, 0.3))


def test_load_missing_file_and_save_invalid(tmp_path):
    with pytest.raises(HPAInputError, match="missing.json"):
        load_thresholds(tmp_path / "missing.json", HPA2018)
    with pytest.raises(HPAInputError):
        save_thresholds(tmp_path / "t.json", np.full(HPA2018.num_classes, np.inf), HPA2018)
    with pytest.raises(HPAInputError):
        save_thresholds(tmp_path / "t.json", np.full(3, 0.5), HPA2018)
    assert not (tmp_path / "t.json").exists()


def _two_class_case() -> tuple[np.ndarray, np.ndarray]:
    """Four rows; the other 26 classes have no positives.

    Class 0: negatives 0.1, positives 0.3 -> its own best band [0.1, 0.3), tuned 0.29.
    Class 1: negatives 0.6, positives 0.8 -> its own best band [0.6, 0.8), tuned 0.6.
    One threshold for all: in [0.1, 0.3) class 0 scores 1 and class 1 (all four predicted) 2/3;
    in [0.3, 0.6) 0 and 2/3; in [0.6, 0.8) 0 and 1; so the global threshold is 0.29.
    """
    probabilities = np.full((4, HPA2018.num_classes), 0.05)
    targets = np.zeros((4, HPA2018.num_classes), dtype=np.uint8)
    probabilities[:, 0] = [0.1, 0.1, 0.3, 0.3]
    probabilities[:, 1] = [0.6, 0.6, 0.8, 0.8]
    targets[:, 0] = targets[:, 1] = [0, 0, 1, 1]
    return probabilities, targets


def test_global_threshold_is_the_best_single_value_for_macro_f1():
    probabilities, targets = _two_class_case()
    assert global_threshold(probabilities, targets) == pytest.approx(0.29)
    tuned = search_thresholds(probabilities, targets)
    assert tuned[:2] == pytest.approx([0.29, 0.6])


def test_shrunk_thresholds_follow_the_documented_weight():
    probabilities, targets = _two_class_case()
    # Both classes have 2 positives: with h = 2 the weight is 2 / (2 + 2) = 1/2.
    shrunk = shrunk_thresholds(probabilities, targets, half_weight_positives=2)
    assert shrunk[0] == pytest.approx(0.29)  # own = global
    assert shrunk[1] == pytest.approx(0.5 * 0.6 + 0.5 * 0.29)
    np.testing.assert_allclose(shrunk[2:], 0.29)  # no positives: the global threshold
    # h = 6: weight 2 / 8 = 1/4.
    assert shrunk_thresholds(probabilities, targets, 6)[1] == pytest.approx(
        0.25 * 0.6 + 0.75 * 0.29
    )
    with pytest.raises(ValueError):
        shrunk_thresholds(probabilities, targets, half_weight_positives=0)


def test_min_positives_gives_rare_classes_the_global_threshold():
    probabilities, targets = _two_class_case()
    np.testing.assert_allclose(min_positives_thresholds(probabilities, targets, 3), 0.29)
    enough = min_positives_thresholds(probabilities, targets, 2)
    assert enough[1] == pytest.approx(0.6)
    np.testing.assert_allclose(np.delete(enough, 1), 0.29)


def test_rate_matching_predicts_the_train_rate_of_each_class():
    probabilities = np.tile(np.linspace(0.1, 1.0, 10)[:, None], (1, HPA2018.num_classes))
    rates = np.full(HPA2018.num_classes, 0.3)
    rates[1], rates[2], rates[3], rates[4] = 0.0, 1.0, 0.04, 0.06  # 0, 10, 0.4 -> 0, 0.6 -> 1 rows
    thresholds = rate_matched_thresholds(probabilities, rates)
    assert thresholds[0] == pytest.approx(0.75)  # 3 rows above: 0.8, 0.9, 1.0
    assert thresholds[1] == pytest.approx(1.0)  # none (strictly above the largest)
    assert 0 <= thresholds[2] < 0.1  # all ten
    predicted = binarize(probabilities, thresholds, ensure_one_label=False).sum(axis=0)
    assert predicted[:5].tolist() == [3, 0, 10, 0, 1]
    assert np.all(predicted[5:] == 3)
    # Ties: rows of one probability stay together.
    tied = probabilities.copy()
    tied[:, 0] = [0.2] * 5 + [0.9] * 5
    assert binarize(tied, rate_matched_thresholds(tied, rates), False)[:, 0].sum() == 5
    with pytest.raises(ValueError):
        rate_matched_thresholds(probabilities, np.full(HPA2018.num_classes, 1.5))


def test_fold_averaged_thresholds_average_the_searches_without_each_fold():
    # One class, four rows, two folds: rows 0 and 1 in one fold and rows 2 and 3 in the other
    # (what default_rng(0) draws, checked below). Searched on rows 0, 1 (0.3 negative, 0.6
    # positive) the F1-maximising band is [0.3, 0.6), whose candidate closest to 0.5 is 0.5;
    # on rows 2, 3 (0.1 negative, 0.2 positive) the band is [0.1, 0.2), on the 0.05 grid 0.15.
    # The average is 0.325.
    probabilities = np.full((4, HPA2018.num_classes), 0.05)
    targets = np.zeros((4, HPA2018.num_classes), dtype=np.uint8)
    probabilities[:, 0] = [0.3, 0.6, 0.1, 0.2]
    targets[:, 0] = [0, 1, 0, 1]
    assert (np.random.default_rng(0).permutation(4) % 2).tolist() in ([0, 0, 1, 1], [1, 1, 0, 0])
    grid = np.round(np.arange(0.05, 1.0, 0.05), 2)
    thresholds = fold_averaged_thresholds(probabilities, targets, folds=2, candidates=grid)
    assert thresholds[0] == pytest.approx((0.5 + 0.15) / 2)
    np.testing.assert_allclose(thresholds[1:], 0.5)  # no positives in any fold: the fallback
    # a single search on all four rows gives 0.15 (the band [0.1, 0.2) keeps both positives)
    assert search_thresholds(probabilities, targets, grid)[0] == pytest.approx(0.15)
    np.testing.assert_array_equal(
        decision_thresholds("folds", probabilities, targets, folds=2, candidates=grid), thresholds
    )
    with pytest.raises(ValueError, match="folds must be between 2 and the 4 rows"):
        fold_averaged_thresholds(probabilities, targets, folds=5)


def test_average_thresholds_is_the_class_wise_mean():
    first, second = np.full(HPA2018.num_classes, 0.2), np.linspace(0.1, 0.9, HPA2018.num_classes)
    np.testing.assert_allclose(average_thresholds([first, second]), (first + second) / 2)
    np.testing.assert_array_equal(average_thresholds([second]), second)
    with pytest.raises(ValueError):
        average_thresholds([])
    with pytest.raises(ValueError):
        average_thresholds([np.full(5, 0.5), np.full(6, 0.5)])  # vectors of two lengths


def test_decision_thresholds_dispatches_each_policy():
    rng = np.random.default_rng(4)
    probabilities, targets, _ = _separable(rng, n=100)
    rates = np.linspace(0.01, 0.5, HPA2018.num_classes)
    assert POLICIES == ("fixed", "tuned", "rate", "shrunk", "min_positives", "folds")
    np.testing.assert_array_equal(
        decision_thresholds("fixed", probabilities, targets, threshold=0.4),
        np.full(HPA2018.num_classes, 0.4),
    )
    targets[:, 3] = 0  # a class without positives falls back to `threshold`, as hpa.train does
    tuned = decision_thresholds("tuned", probabilities, targets, threshold=0.45)
    np.testing.assert_array_equal(tuned, search_thresholds(probabilities, targets, fallback=0.45))
    assert tuned[3] == 0.45
    np.testing.assert_array_equal(
        decision_thresholds("rate", probabilities, targets, rates),
        rate_matched_thresholds(probabilities, rates),
    )
    np.testing.assert_array_equal(
        decision_thresholds("shrunk", probabilities, targets, half_weight_positives=3),
        shrunk_thresholds(probabilities, targets, 3),
    )
    np.testing.assert_array_equal(
        decision_thresholds("min_positives", probabilities, targets, min_positives=40),
        min_positives_thresholds(probabilities, targets, 40),
    )
    assert policy_parameters("shrunk") == ("half_weight_positives", "candidates")


def test_decision_thresholds_rejects_unknown_policies_and_parameters():
    probabilities, targets = _two_class_case()
    with pytest.raises(HPAInputError, match="unknown threshold policy 'best'.*fixed, tuned"):
        decision_thresholds("best", probabilities, targets)
    with pytest.raises(HPAInputError, match="'rate' takes no parameters, not threshold"):
        decision_thresholds(
            "rate", probabilities, targets, np.zeros(HPA2018.num_classes), threshold=0.5
        )
    with pytest.raises(HPAInputError, match="min_positives, candidates, not minimum"):
        decision_thresholds("min_positives", probabilities, targets, minimum=3)
    with pytest.raises(ValueError, match="needs train_label_rate"):
        decision_thresholds("rate", probabilities, targets)


def test_an_unknown_policy_or_parameter_is_refused_before_training():
    from hpa.models.module import HPAModule

    with pytest.raises(HPAInputError, match="unknown threshold policy"):
        HPAModule("seed_cnn", thresholds="best")
    with pytest.raises(HPAInputError, match="min_positives"):
        HPAModule("seed_cnn", thresholds="min_positives", threshold_params={"minimum": 3})
    HPAModule("seed_cnn", thresholds="shrunk", threshold_params={"half_weight_positives": 4})
