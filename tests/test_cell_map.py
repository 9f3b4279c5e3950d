"""Cell mAP at mask IoU 0.6 on hand-made images whose answers are worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hpa.evaluation.cell_map import (
    CellMAP,
    average_precision,
    cell_overlaps,
    segmentation_match_rate,
)
from hpa.evaluation.cell_submission import parse_prediction_string, prediction_string

NUM_CLASSES = 19
SHAPE = (30, 50)  # height != width, so a transposition would show


def squares(*boxes: tuple[int, int, int, int], shape=SHAPE) -> np.ndarray:
    """A label image with cell i + 1 = rows r0:r1, columns c0:c1 of ``boxes[i]``."""
    labels = np.zeros(shape, dtype=np.int32)
    for cell, (r0, r1, c0, c1) in enumerate(boxes, start=1):
        labels[r0:r1, c0:c1] = cell
    return labels


def scores_of(*rows: dict[int, float]) -> np.ndarray:
    scores = np.zeros((len(rows), NUM_CLASSES))
    for row, values in enumerate(rows):
        for class_id, score in values.items():
            scores[row, class_id] = score
    return scores


THREE_CELLS = squares((0, 10, 0, 10), (0, 10, 20, 30), (15, 25, 35, 45))


def test_a_perfect_prediction_scores_1_and_classes_without_truth_are_nan():
    truth_classes = {1: {0}, 2: {0, 16}, 3: {18}}
    # the true classes at 0.9, every other class at 0.1: those are false positives, but all
    # ranked below every true positive, so each class with truth still has AP 1
    scores = np.full((3, NUM_CLASSES), 0.1)
    for cell, classes in truth_classes.items():
        scores[cell - 1, sorted(classes)] = 0.9
    metric = CellMAP()
    metric.add_image("img", THREE_CELLS, truth_classes, THREE_CELLS, scores)
    result = metric.compute()
    assert result["map"] == 1.0
    np.testing.assert_array_equal(result["ap"][[0, 16, 18]], [1.0, 1.0, 1.0])
    assert np.isnan(np.delete(result["ap"], [0, 16, 18])).all()
    assert result["truth_cells"][[0, 16, 18]].tolist() == [2, 1, 1]
    assert result["true_positives"][[0, 16, 18]].tolist() == [2, 1, 1]
    assert result["predictions"].tolist() == [3] * NUM_CLASSES  # every cell, every class
    assert result["images"] == 1


@pytest.mark.parametrize(("covered", "is_hit"), [(60, True), (59, False)])
def test_iou_060_matches_and_just_below_does_not(covered: int, is_hit: bool):
    truth = squares((5, 15, 5, 15))  # 100 pixels
    predicted = np.zeros(SHAPE, dtype=np.int32)
    rows, columns = np.unravel_index(np.arange(covered), (10, 10))  # row by row
    predicted[rows + 5, columns + 5] = 1  # inside the truth cell: IoU = covered / 100
    overlaps = cell_overlaps(truth, predicted)
    assert overlaps.pair_ious.tolist() == ([covered / 100] if is_hit else [])
    metric = CellMAP()
    metric.add_image("img", truth, {1: {4}}, predicted, scores_of({4: 0.8}))
    result = metric.compute()
    assert result["true_positives"][4] == int(is_hit)
    assert result["ap"][4] == (1.0 if is_hit else 0.0)
    assert result["map"] == (1.0 if is_hit else 0.0)


def test_two_predictions_on_one_truth_cell_are_one_tp_and_one_fp():
    truth = squares((5, 15, 5, 15), (20, 28, 30, 40))
    exact = truth == 1
    most = exact.copy()
    most[5, 5:10] = False  # IoU 0.95 with cell 1: also above 0.6
    other = truth == 2
    metric = CellMAP()
    # overlapping predicted masks come as a list; the more confident one takes cell 1, the
    # duplicate is a false positive ranked between the two true positives
    metric.add_image(
        "img",
        truth,
        {1: {2}, 2: {2}},
        [most, exact, other],
        scores_of({2: 0.9}, {2: 0.8}, {2: 0.7}),
    )
    result = metric.compute()
    assert result["predictions"][2] == 3
    assert result["true_positives"][2] == 2
    assert math.isclose(result["ap"][2], 5 / 6)  # TP, FP, TP with 2 truths (see below)


def test_average_precision_by_hand():
    # TP, FP, TP with 2 truths: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1; made monotone:
    # 1 up to recall 1/2, 2/3 up to recall 1 -> AP = 1/2 * 1 + 1/2 * 2/3 = 5/6
    assert math.isclose(average_precision([0.9, 0.8, 0.7], [True, False, True], 2), 5 / 6)
    # FP, TP, TP with 2 truths: precision 0, 1/2, 2/3; the 1/2 at recall 1/2 is raised to 2/3
    assert math.isclose(average_precision([0.9, 0.8, 0.7], [False, True, True], 2), 2 / 3)
    # the ranking is by confidence, not by the order given
    assert math.isclose(average_precision([0.7, 0.9, 0.8], [True, True, False], 2), 5 / 6)
    # a truth never found caps the recall: TP only, 2 truths -> 1/2
    assert average_precision([0.3], [True], 2) == 0.5
    assert average_precision([], [], 3) == 0.0
    assert math.isnan(average_precision([0.9], [False], 0))


def test_the_hand_computed_ap_through_cellmap():
    # class 3: cells 1 and 2 are truth; predicted: cell 1 (0.9, TP), a cell on background
    # (0.8, FP), cell 2 (0.7, TP) -> AP 5/6, as above
    truth = squares((0, 10, 0, 10), (0, 10, 20, 30))
    predicted = squares((0, 10, 0, 10), (20, 28, 0, 10), (0, 10, 20, 30))
    metric = CellMAP()
    metric.add_image(
        "img", truth, {1: {3}, 2: {3}}, predicted, scores_of({3: 0.9}, {3: 0.8}, {3: 0.7})
    )
    result = metric.compute()
    assert math.isclose(result["ap"][3], 5 / 6)
    assert math.isclose(result["map"], 5 / 6)


def test_a_class_without_truth_is_left_out_of_the_mean():
    truth = squares((0, 10, 0, 10), (0, 10, 20, 30))
    predicted = squares((0, 10, 0, 10), (20, 28, 0, 10))
    # class 0: cell 1 found (AP 1); class 1: its truth (cell 2) missed (AP 0);
    # class 5 is predicted (a false positive) but has no truth: NaN, not in the mean
    metric = CellMAP()
    metric.add_image("img", truth, {1: {0}, 2: {1}}, predicted, scores_of({0: 0.9}, {5: 0.8}))
    result = metric.compute()
    assert result["ap"][0] == 1.0 and result["ap"][1] == 0.0
    assert np.isnan(result["ap"][5]) and result["predictions"][5] == 1
    assert result["map"] == 0.5


def test_images_are_pooled_before_ranking():
    truth = squares((0, 10, 0, 10), (0, 10, 20, 30))
    metric = CellMAP()
    # image 1: class 0 found at confidence 0.6
    metric.add_image(
        "one", squares((0, 10, 0, 10)), {1: {0}}, squares((0, 10, 0, 10)), scores_of({0: 0.6})
    )
    # image 2: a false positive at 0.9, its truth cell found at 0.3; the truth cell 2 is class 7
    predicted = squares((20, 28, 0, 10), (0, 10, 0, 10))
    metric.add_image("two", truth, {1: {0}, 2: {7}}, predicted, scores_of({0: 0.9}, {0: 0.3}))
    result = metric.compute()
    # pooled class 0: FP 0.9, TP 0.6, TP 0.3, with 2 truth cells of class 0
    assert result["truth_cells"][0] == 2
    # precision 0, 1/2, 2/3 at recall 0, 1/2, 1 -> monotone 2/3 -> AP 2/3 (one image alone: 1)
    assert math.isclose(result["ap"][0], 2 / 3)
    assert result["ap"][7] == 0.0
    assert math.isclose(result["map"], (2 / 3 + 0.0) / 2)
    assert result["images"] == 2
    with pytest.raises(ValueError, match="'two' was already added"):
        metric.add_image("two", truth, {1: {0}, 2: {7}}, predicted, scores_of({0: 0.9}, {0: 0.3}))


def test_truth_classes_must_name_exactly_the_truth_cells():
    metric = CellMAP()
    with pytest.raises(ValueError, match="truth cells \\[3\\] have no classes"):
        metric.add_image("img", THREE_CELLS, {1: {0}, 2: {0}}, THREE_CELLS, scores_of({}, {}, {}))
    with pytest.raises(ValueError, match="truth cells \\[4\\] have classes but no pixels"):
        metric.add_image(
            "img", THREE_CELLS, {1: {0}, 2: {0}, 3: {1}, 4: {2}}, THREE_CELLS, scores_of({}, {}, {})
        )
    with pytest.raises(ValueError, match="class ids \\[19\\]"):
        metric.add_image(
            "img", THREE_CELLS, {1: {0}, 2: {0}, 3: {19}}, THREE_CELLS, scores_of({}, {}, {})
        )
    assert metric.compute()["images"] == 0


def test_the_match_rate_counts_truth_cells_matched_one_to_one():
    # cell 1 exact; cell 2 half covered (IoU 0.5: no match); cell 3 not predicted at all
    predicted = squares((0, 10, 0, 10), (0, 10, 20, 25))
    assert segmentation_match_rate(THREE_CELLS, predicted) == (1, 3)
    assert segmentation_match_rate(THREE_CELLS, predicted, iou=0.5) == (2, 3)
    assert segmentation_match_rate(THREE_CELLS, THREE_CELLS) == (3, 3)
    # two overlapping masks on one truth cell match it once
    exact = THREE_CELLS == 1
    assert segmentation_match_rate(THREE_CELLS, [exact, exact]) == (1, 3)
    assert segmentation_match_rate(np.zeros(SHAPE, dtype=np.int32), predicted) == (0, 0)


def brute_force_ious(truth: np.ndarray, masks: list[np.ndarray]) -> dict[tuple[int, int], float]:
    ious = {}
    for row, mask in enumerate(masks):
        for truth_id in np.unique(truth[truth > 0]).tolist():
            cell = truth == truth_id
            intersection = np.logical_and(mask, cell).sum()
            if intersection:
                ious[(row, truth_id)] = intersection / np.logical_or(mask, cell).sum()
    return ious


@pytest.mark.parametrize("sparse_ids", [False, True])
def test_contingency_ious_equal_a_brute_force_comparison(sparse_ids: bool):
    rng = np.random.default_rng(7)
    truth = rng.integers(0, 6, size=(40, 70)).repeat(2, axis=0)[:40]
    predicted = np.roll(truth, 1, axis=1) * (rng.random(truth.shape) < 0.9)
    if sparse_ids:  # large, non-consecutive truth ids are renumbered before counting
        truth = np.where(truth > 0, truth * 1_000_003, 0)
    num_predicted = int(predicted.max())
    masks = [predicted == k for k in range(1, num_predicted + 1)]
    expected = brute_force_ious(truth, masks)
    for cells in (predicted, masks):
        overlaps = cell_overlaps(truth, cells, num_predicted, iou_threshold=0.0)
        found = {
            (row, truth_id): iou
            for row, truth_id, iou in zip(
                overlaps.pair_rows.tolist(),
                overlaps.pair_truth_ids.tolist(),
                overlaps.pair_ious.tolist(),
                strict=True,
            )
        }
        assert found.keys() == expected.keys()
        for pair, iou in expected.items():
            assert math.isclose(found[pair], iou)
        assert overlaps.truth_ids.tolist() == np.unique(truth[truth > 0]).tolist()
        assert overlaps.predicted_rows.tolist() == list(range(num_predicted))


def test_the_metric_scores_what_the_submission_string_holds():
    truth = squares((0, 10, 0, 10), (0, 10, 20, 30), (15, 25, 35, 45))
    predicted = squares((0, 10, 0, 9), (1, 10, 20, 30), (15, 25, 0, 10))
    scores = np.random.default_rng(3).uniform(0.01, 1.0, size=(3, NUM_CLASSES))
    truth_classes = {1: {0, 5}, 2: {5}, 3: {18}}
    direct = CellMAP()
    direct.add_image("img", truth, truth_classes, predicted, scores)
    # read the cells and their scores back from the prediction string
    triples = parse_prediction_string(prediction_string(predicted, scores), *SHAPE)
    masks: list[np.ndarray] = []
    read_scores: list[np.ndarray] = []
    for class_id, confidence, mask in triples:
        if not masks or not np.array_equal(masks[-1], mask):
            masks.append(mask)
            read_scores.append(np.zeros(NUM_CLASSES))
        read_scores[-1][class_id] = confidence
    assert len(masks) == 3
    from_string = CellMAP()
    from_string.add_image("img", truth, truth_classes, masks, np.stack(read_scores))
    expected, found = direct.compute(), from_string.compute()
    np.testing.assert_allclose(found["ap"], expected["ap"])
    assert found["map"] == expected["map"]
    assert 0 < expected["map"] < 1


def test_thousands_of_cells_in_both_images_take_the_sparse_table():
    # 4900 one-pixel cells in each: (4900 + 1) ** 2 id combinations, past the dense table
    truth = np.arange(1, 4901, dtype=np.int32).reshape(70, 70)
    predicted = truth.copy()
    predicted[0, 0] = 0  # predicted cell 1 is gone: truth cell 1 stays unmatched
    overlaps = cell_overlaps(truth, predicted)
    assert overlaps.pair_rows.tolist() == list(range(1, 4900))
    assert overlaps.pair_truth_ids.tolist() == list(range(2, 4901))
    assert (overlaps.pair_ious == 1.0).all()
    assert segmentation_match_rate(truth, predicted) == (4899, 4900)
