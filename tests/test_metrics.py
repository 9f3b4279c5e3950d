from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, precision_recall_fscore_support

from hpa.core import metric_names as metrics
from hpa.core.labels import HPA2018, HPA2021
from hpa.core.metric_names import metric_name, per_class_f1_name
from hpa.evaluation.metrics import (
    MultilabelSampleF1,
    build_f1_metrics,
    build_per_class_f1,
    per_class_report,
)

SEEDS = [0, 1, 2, 3]
BATCH_SIZES = [7, 16, 1, 24, 16]  # uneven, to exercise accumulation across update() calls


def random_multilabel(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, 28) 0/1 targets and probabilities with the awkward cases the F1s must handle.

    Rows 0-3: empty truth; rows 2-5: empty prediction (so rows 2-3 are empty in both). Class 27
    has no positives but some predictions, class 26 neither positives nor predictions.
    """
    rng = np.random.default_rng(seed)
    num_samples = sum(BATCH_SIZES)
    targets = (rng.random((num_samples, HPA2018.num_classes)) < 0.15).astype(np.int64)
    probabilities = rng.random((num_samples, HPA2018.num_classes)).astype(np.float32) ** 2
    targets[0:4] = 0
    probabilities[2:6] = 0.1
    targets[:, 27] = 0
    targets[:, 26] = 0
    probabilities[:, 26] = 0.2
    return targets, probabilities


def update_in_batches(metric, probabilities: np.ndarray, targets: np.ndarray) -> None:
    start = 0
    for batch_size in BATCH_SIZES:
        stop = start + batch_size
        metric.update(
            torch.from_numpy(probabilities[start:stop]), torch.from_numpy(targets[start:stop])
        )
        start = stop


def test_metric_names() -> None:
    assert metrics.TRAIN_LOSS == "train/loss"
    assert metrics.VAL_LOSS == "val/loss"
    assert metrics.VAL_F1_MACRO == "val/f1_macro"
    assert metrics.VAL_F1_SAMPLES == "val/f1_samples"
    assert metrics.TEST_LOSS == "test/loss"
    assert metrics.TEST_F1_MACRO == "test/f1_macro"
    assert metrics.TEST_F1_SAMPLES == "test/f1_samples"
    assert metric_name("val", "f1_macro") == "val/f1_macro"
    assert per_class_f1_name("test", HPA2018, 8) == "test/f1_class/08_peroxisomes"
    assert per_class_f1_name("val", HPA2018, 27) == "val/f1_class/27_rods_and_rings"
    assert (
        per_class_f1_name("test", HPA2021, 17)
        == "test/f1_class/17_vesicles_and_punctate_cytosolic_patterns"
    )


def test_collection_keys_match_metric_names() -> None:
    collection = build_f1_metrics(HPA2018.num_classes).clone(prefix="val/")
    assert set(collection.keys()) == {metrics.VAL_F1_MACRO, metrics.VAL_F1_SAMPLES}


@pytest.mark.parametrize("seed", SEEDS)
def test_f1_metrics_equal_sklearn(seed: int) -> None:
    targets, probabilities = random_multilabel(seed)
    predictions = (probabilities > 0.5).astype(np.int64)
    assert predictions[:, 27].any() and not predictions[:, 26].any()

    collection = build_f1_metrics(HPA2018.num_classes)
    update_in_batches(collection, probabilities, targets)
    scores = collection.compute()

    expected_macro = f1_score(targets, predictions, average="macro", zero_division=0)
    expected_samples = f1_score(targets, predictions, average="samples", zero_division=0)
    assert scores["f1_macro"].item() == pytest.approx(expected_macro, abs=1e-6)
    assert scores["f1_samples"].item() == pytest.approx(expected_samples, abs=1e-6)


@pytest.mark.parametrize("seed", SEEDS)
def test_per_class_f1_equals_sklearn(seed: int) -> None:
    targets, probabilities = random_multilabel(seed)
    predictions = (probabilities > 0.5).astype(np.int64)

    per_class = build_per_class_f1(HPA2018.num_classes)
    update_in_batches(per_class, probabilities, targets)

    expected = f1_score(targets, predictions, average=None, zero_division=0)
    assert per_class.compute().shape == (HPA2018.num_classes,)
    np.testing.assert_allclose(per_class.compute().numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("zero_division", [0.0, 1.0])
def test_sample_f1_zero_division_matches_sklearn(zero_division: float) -> None:
    targets, probabilities = random_multilabel(seed=5)
    predictions = (probabilities > 0.5).astype(np.int64)

    sample_f1 = MultilabelSampleF1(HPA2018.num_classes, zero_division=zero_division)
    update_in_batches(sample_f1, probabilities, targets)

    expected = f1_score(targets, predictions, average="samples", zero_division=zero_division)
    assert sample_f1.compute().item() == pytest.approx(expected, abs=1e-6)


def test_sample_f1_per_class_thresholds() -> None:
    targets, probabilities = random_multilabel(seed=6)
    thresholds = np.linspace(0.2, 0.8, HPA2018.num_classes, dtype=np.float32)
    predictions = (probabilities > thresholds).astype(np.int64)

    sample_f1 = MultilabelSampleF1(HPA2018.num_classes, threshold=torch.from_numpy(thresholds))
    update_in_batches(sample_f1, probabilities, targets)

    expected = f1_score(targets, predictions, average="samples", zero_division=0)
    assert sample_f1.compute().item() == pytest.approx(expected, abs=1e-6)


def test_binarised_predictions_give_the_same_scores() -> None:
    """The lead's per-class-threshold route: binarise first, then feed 0/1 to both metrics."""
    targets, probabilities = random_multilabel(seed=7)
    predictions = (probabilities > 0.3).astype(np.int64)

    collection = build_f1_metrics(HPA2018.num_classes)
    update_in_batches(collection, predictions.astype(np.float32), targets)
    scores = collection.compute()

    expected_macro = f1_score(targets, predictions, average="macro", zero_division=0)
    expected_samples = f1_score(targets, predictions, average="samples", zero_division=0)
    assert scores["f1_macro"].item() == pytest.approx(expected_macro, abs=1e-6)
    assert scores["f1_samples"].item() == pytest.approx(expected_samples, abs=1e-6)


def test_probability_equal_to_threshold_is_not_predicted_by_either_metric() -> None:
    targets = torch.ones(3, HPA2018.num_classes, dtype=torch.long)
    probabilities = torch.full((3, HPA2018.num_classes), 0.5)

    scores = build_f1_metrics(HPA2018.num_classes, threshold=0.5)(probabilities, targets)

    assert scores["f1_macro"].item() == 0.0
    assert scores["f1_samples"].item() == 0.0


def test_sample_f1_state_merge_is_exact() -> None:
    """Summing the states of two processes (what DDP does) gives the score of all samples."""
    targets, probabilities = random_multilabel(seed=8)
    predictions = (probabilities > 0.5).astype(np.int64)
    half = len(targets) // 3

    first, second = MultilabelSampleF1(HPA2018.num_classes), MultilabelSampleF1(HPA2018.num_classes)
    first.update(torch.from_numpy(probabilities[:half]), torch.from_numpy(targets[:half]))
    second.update(torch.from_numpy(probabilities[half:]), torch.from_numpy(targets[half:]))
    first.merge_state(second)

    expected = f1_score(targets, predictions, average="samples", zero_division=0)
    assert first.compute().item() == pytest.approx(expected, abs=1e-6)


def test_sample_f1_rejects_bad_shapes_and_thresholds() -> None:
    sample_f1 = MultilabelSampleF1(HPA2018.num_classes)
    with pytest.raises(ValueError, match="28"):
        sample_f1.update(torch.rand(4, 27), torch.zeros(4, 27))
    with pytest.raises(ValueError, match="threshold"):
        MultilabelSampleF1(HPA2018.num_classes, threshold=[0.5, 0.5])


def test_per_class_report_matches_sklearn() -> None:
    targets, probabilities = random_multilabel(seed=9)
    predictions = (probabilities > 0.5).astype(np.int64)

    report = per_class_report(HPA2018, targets, predictions)

    precision, recall, f1, _ = precision_recall_fscore_support(
        targets, predictions, average=None, zero_division=0
    )
    assert list(report.columns) == [
        "class_id",
        "class_name",
        "precision",
        "recall",
        "f1",
        "support",
    ]
    assert report["class_id"].tolist() == list(range(HPA2018.num_classes))
    assert report["class_name"].tolist() == list(HPA2018.class_names)
    np.testing.assert_allclose(report["precision"], precision)
    np.testing.assert_allclose(report["recall"], recall)
    np.testing.assert_allclose(report["f1"], f1)
    assert report["support"].tolist() == targets.sum(axis=0).tolist()
    assert report.loc[26, "f1"] == 0.0 and report.loc[26, "support"] == 0


def test_per_class_report_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="28"):
        per_class_report(
            HPA2018, np.zeros((4, HPA2018.num_classes)), np.zeros((5, HPA2018.num_classes))
        )
