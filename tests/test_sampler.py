from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from cli import CONF_DIR
from omegaconf import OmegaConf
from shared_data import KaggleTrainLabels
from torch.utils.data import DataLoader

from hpa.core.errors import HPAInputError
from hpa.core.labels import HPA2018, HPA2021
from hpa.data.datamodule import HPADataModule
from hpa.data.sampler import (
    OversamplingSampler,
    class_weights,
    expected_class_frequency,
    frequency_rows,
    frequency_table,
    image_weights,
)
from hpa.data.synthetic.labels import KAGGLE_CLASS_COUNTS

NUM_CLASSES = HPA2018.num_classes
MINORITY = list(HPA2018.minority_classes)


@pytest.fixture(scope="module")
def labels(kaggle_train_labels: KaggleTrainLabels) -> np.ndarray:
    """The real train.csv's labels, or without ../shared labels drawn with its class counts."""
    return kaggle_train_labels.labels


@pytest.fixture(scope="module")
def real(kaggle_train_labels: KaggleTrainLabels) -> bool:
    """Whether the labels are the real train.csv's (exact real numbers are checked on those)."""
    return kaggle_train_labels.real


@pytest.fixture(scope="module")
def default_weights(labels: np.ndarray) -> np.ndarray:
    return image_weights(labels, class_weights(HPA2018, labels.sum(axis=0)))


def test_minority_strategy_boosts_only_the_listed_classes() -> None:
    weights = class_weights(HPA2018, KAGGLE_CLASS_COUNTS)
    assert weights.shape == (NUM_CLASSES,)
    assert (weights[MINORITY] == 8.0).all()
    assert (np.delete(weights, MINORITY) == 1.0).all()
    custom = class_weights(HPA2018, KAGGLE_CLASS_COUNTS, minority_classes=[3], boost=2.5)
    np.testing.assert_array_equal(custom, np.where(np.arange(NUM_CLASSES) == 3, 2.5, 1.0))


def test_inverse_frequency_strategy() -> None:
    counts = np.full(NUM_CLASSES, 100)
    counts[0], counts[1], counts[2], counts[3] = 400, 1, 0, 25
    weights = class_weights(
        HPA2018, counts, strategy="inverse_frequency", power=0.5, max_weight=10.0
    )
    assert weights[0] == 1.0  # the most frequent class
    assert weights[4] == pytest.approx(2.0)  # sqrt(400 / 100)
    assert weights[3] == pytest.approx(4.0)  # sqrt(400 / 25)
    assert weights[1] == 10.0  # sqrt(400) = 20, clipped
    assert weights[2] == 1.0  # no images
    linear = class_weights(HPA2018, KAGGLE_CLASS_COUNTS, strategy="inverse_frequency", power=1.0)
    assert linear[27] == 50.0 and linear[0] == 1.0
    assert linear[25] == pytest.approx(12885 / 8228)


def test_bad_strategy_settings_are_refused() -> None:
    with pytest.raises(HPAInputError, match="strategy"):
        class_weights(HPA2018, KAGGLE_CLASS_COUNTS, strategy="balanced")
    with pytest.raises(HPAInputError, match="boost"):
        class_weights(HPA2018, KAGGLE_CLASS_COUNTS, boost=0)
    with pytest.raises(HPAInputError, match=r"minority_classes: class ids \[28\] are outside"):
        class_weights(HPA2018, KAGGLE_CLASS_COUNTS, minority_classes=[28])
    with pytest.raises(HPAInputError, match="19 non-negative numbers"):
        class_weights(HPA2021, KAGGLE_CLASS_COUNTS, strategy="inverse_frequency")


def test_image_weight_is_the_max_of_its_class_weights(labels: np.ndarray) -> None:
    weights_of_classes = class_weights(HPA2018, labels.sum(axis=0), strategy="inverse_frequency")
    weights = image_weights(labels, weights_of_classes)
    assert weights.shape == (len(labels),)
    for row in range(0, len(labels), 7):  # every 7th image, checked one by one
        expected = max(weights_of_classes[c] for c in np.flatnonzero(labels[row]))
        assert weights[row] == expected
    unlabelled_and_mixed = np.zeros((2, NUM_CLASSES), dtype=np.uint8)
    unlabelled_and_mixed[1, [0, 27]] = 1
    expected_weights = [1.0, weights_of_classes[27]]
    assert image_weights(unlabelled_and_mixed, weights_of_classes).tolist() == expected_weights


def test_uniform_weights_give_the_plain_epoch_frequency(labels: np.ndarray, real: bool) -> None:
    frequency = expected_class_frequency(labels, np.ones(len(labels)))
    np.testing.assert_allclose(frequency, labels.sum(axis=0) / len(labels))
    if real:
        np.testing.assert_allclose(frequency, np.asarray(KAGGLE_CLASS_COUNTS) / len(labels))


def test_default_oversampling_raises_minority_frequency(
    labels: np.ndarray, default_weights: np.ndarray
) -> None:
    before = expected_class_frequency(labels, np.ones(len(labels)))
    after = expected_class_frequency(labels, default_weights)
    factor = after / before
    # Every minority image weighs 8; the total weight grows by ~12 %, so the factor is ~7.2.
    assert (factor[MINORITY] > 6.5).all(), factor[MINORITY]
    others = np.delete(np.arange(NUM_CLASSES), MINORITY)
    assert (factor[others] < 2.0).all()  # the others only rise through co-occurring labels
    assert before[MINORITY].sum() < 0.02 and after[MINORITY].sum() > 0.12  # summed frequencies


def test_drawn_epoch_matches_the_expected_frequency(
    labels: np.ndarray, default_weights: np.ndarray
) -> None:
    sampler = OversamplingSampler(default_weights, seed=0)
    drawn = np.fromiter(iter(sampler), dtype=np.int64)
    assert len(drawn) == len(sampler) == len(labels)
    assert drawn.min() >= 0 and drawn.max() < len(labels)
    observed = labels[drawn].sum(axis=0)
    expected = expected_class_frequency(labels, default_weights) * len(drawn)
    binomial_sd = np.sqrt(expected * (1 - expected / len(drawn)))
    z_scores = (observed - expected) / binomial_sd
    assert np.abs(z_scores).max() < 5, dict(enumerate(np.round(z_scores, 1)))
    relative_error = np.abs(observed - expected)[MINORITY] / expected[MINORITY]
    assert relative_error.max() < 0.35, relative_error  # rarest: ~80 expected draws


def test_set_epoch_changes_and_repeats_draws(default_weights: np.ndarray) -> None:
    sampler = OversamplingSampler(default_weights, num_samples=1000, seed=5)
    epoch_0 = list(sampler)
    assert list(sampler) == epoch_0
    sampler.set_epoch(1)
    epoch_1 = list(sampler)
    assert epoch_1 != epoch_0 and len(epoch_1) == 1000
    sampler.set_epoch(0)
    assert list(sampler) == epoch_0
    same_seed = OversamplingSampler(default_weights, num_samples=1000, seed=5)
    same_seed.set_epoch(1)
    assert list(same_seed) == epoch_1
    assert list(OversamplingSampler(default_weights, num_samples=1000, seed=6)) != epoch_0
    # neighbouring seeds do not share epochs (seed 5, epoch 1 is not seed 6, epoch 0)
    assert list(OversamplingSampler(default_weights, num_samples=1000, seed=6)) != epoch_1


def test_sampler_feeds_a_dataloader() -> None:
    weights = np.zeros(10)
    weights[[2, 7]] = [1.0, 3.0]  # zero-weight indices are never drawn
    sampler = OversamplingSampler(weights, num_samples=400, seed=0)
    batches = list(DataLoader(torch.arange(10), batch_size=100, sampler=sampler))
    drawn = torch.cat(batches)
    assert drawn.tolist() == list(sampler)
    assert set(drawn.tolist()) == {2, 7}
    assert 0.65 < (drawn == 7).float().mean().item() < 0.85  # 3/4 expected


@pytest.mark.parametrize("weights", [[], [0.0, 0.0], [1.0, -1.0], [1.0, float("nan")]])
def test_sampler_refuses_bad_weights(weights: list[float]) -> None:
    with pytest.raises(ValueError, match="weights"):
        OversamplingSampler(weights)


def test_frequency_table_reports_before_and_after(
    labels: np.ndarray, default_weights: np.ndarray, real: bool
) -> None:
    rows = frequency_rows(HPA2018, labels, default_weights)
    assert [row.name for row in rows] == list(HPA2018.class_names)
    rods_and_rings = int(labels[:, 27].sum())
    assert rows[27].num_images == rods_and_rings
    assert rows[27].weighted / rows[27].uniform == pytest.approx(
        expected_class_frequency(labels, default_weights)[27] / (rods_and_rings / len(labels))
    )
    table = frequency_table(HPA2018, labels, default_weights)
    lines = table.splitlines()
    assert len(lines) == NUM_CLASSES + 1
    assert "Rods & rings" in lines[28] and f"{rods_and_rings / len(labels):.2%}" in lines[28]
    if real:
        assert rods_and_rings == 11 and "0.04%" in lines[28]


def test_repeat_draws_keep_every_image_and_repeat_each_about_its_weight() -> None:
    weights = np.array([2.0, 5.0, 3.0, 0.0, 2.0, 7.0])  # repeat factors 1, 2.5, 1.5, 0, 1, 3.5
    sampler = OversamplingSampler(weights, seed=1, draws="repeat")
    assert len(sampler) == 1 + 2 + 1 + 0 + 1 + 3 + round(0.5 + 0.5 + 0.5)  # 10 every epoch
    counts = []
    for epoch in range(400):
        sampler.set_epoch(epoch)
        drawn = list(sampler)
        assert len(drawn) == len(sampler)
        count = np.bincount(drawn, minlength=len(weights))
        np.testing.assert_array_less([0, 1, 0, -1, 0, 2], count)  # at least floor(r), index 3 never
        np.testing.assert_array_less(count, [2, 4, 3, 1, 2, 5])  # at most ceil(r)
        counts.append(count)
    mean_counts = np.mean(counts, axis=0)
    # the extra draws go to the fractional indices (1, 2, 5), two of the three each epoch
    np.testing.assert_allclose(mean_counts[[0, 3, 4]], [1, 0, 1])
    np.testing.assert_allclose(mean_counts[[1, 2, 5]], [2.67, 1.67, 3.67], atol=0.08)
    sampler.set_epoch(3)
    assert list(sampler) == list(sampler)  # an epoch repeats
    assert list(sampler) != (sampler.set_epoch(4) or list(sampler))  # the next one differs


def test_repeat_draws_hold_the_minority_share_without_losing_images(
    labels: np.ndarray, default_weights: np.ndarray
) -> None:
    repeat = OversamplingSampler(default_weights, seed=0, draws="repeat")
    drawn = np.fromiter(iter(repeat), dtype=np.int64)
    assert len(np.unique(drawn)) == len(labels)  # with replacement about 63% of them
    with_replacement = np.fromiter(iter(OversamplingSampler(default_weights, seed=0)), np.int64)
    assert len(np.unique(with_replacement)) < 0.7 * len(labels)
    minority_share = labels[drawn][:, MINORITY].any(axis=1).mean()
    expected = expected_class_frequency(labels, default_weights)[MINORITY].sum()
    assert minority_share == pytest.approx(expected, rel=0.15)  # summed over co-labelled classes


def test_tuned_recipe_lifts_every_class_rarer_than_a_thousand_images(
    labels: np.ndarray, real: bool
) -> None:
    """The tuned recipe's sampler (inverse frequency, power 0.25), as docs/data.md states it.

    The drawn stand-in for train.csv has the real class frequencies but not the real
    co-occurrences, which move how much Nucleoplasm gives, the epoch length and the minority
    share: their real values (docs/data.md) are checked on the real file only."""
    recipe = OmegaConf.load(CONF_DIR / "experiment" / "tuned_recipe.yaml")
    sampler = recipe.data.sampler
    assert recipe.data.oversample and sampler.strategy == "inverse_frequency"
    counts = labels.sum(axis=0)
    weights = image_weights(
        labels, class_weights(HPA2018, counts, sampler.strategy, power=sampler.power)
    )
    factor = expected_class_frequency(labels, weights) / labels.mean(axis=0)
    assert (factor[counts < 1000] > 1.25).all(), factor[counts < 1000]
    assert 1.75 < factor[MINORITY].min() and factor[MINORITY].max() < 3.8  # boost 8: ~7.2
    assert (0.9 if real else 0.85) < factor[np.argmax(counts)] < 1.0  # Nucleoplasm gives a little
    epoch = OversamplingSampler(weights, seed=0, draws=sampler.draws)
    minority_share = weights[labels[:, MINORITY].any(axis=1)].sum() / weights.sum()
    assert len(epoch) == pytest.approx(weights.sum() / weights.min(), abs=1)
    assert 1.4 < len(epoch) / len(labels) < 1.7
    assert minority_share > 1.75 * labels[:, MINORITY].any(axis=1).mean()  # of the draws
    if real:
        assert len(epoch) / len(labels) == pytest.approx(1.57, abs=0.01)
        assert minority_share == pytest.approx(0.034, abs=0.001)


def test_sampler_refuses_unknown_draws_and_a_length_for_repeat_draws() -> None:
    with pytest.raises(HPAInputError, match="draws must be one of .* 'bootstrap'"):
        OversamplingSampler([1.0, 2.0], draws="bootstrap")
    with pytest.raises(ValueError, match="num_samples"):
        OversamplingSampler([1.0, 2.0], num_samples=5, draws="repeat")


def test_datamodule_refuses_unknown_draws_before_reading_data() -> None:
    with pytest.raises(HPAInputError, match=r"data.sampler.draws .* 'bootstrap'"):
        HPADataModule.from_config(
            {"root": "/nowhere", "oversample": True, "sampler": {"draws": "bootstrap"}}, HPA2018
        )


def test_minority_classes_default_to_the_label_sets_own() -> None:
    counts = np.ones(HPA2018.num_classes)
    np.testing.assert_array_equal(
        class_weights(HPA2018, counts), class_weights(HPA2018, counts, minority_classes=MINORITY)
    )
    named = replace(HPA2021, minority_classes=(11, 15))
    weights = class_weights(named, np.ones(19), boost=4.0)
    assert weights.tolist() == [4.0 if c in (11, 15) else 1.0 for c in range(19)]
    # an explicit list, even an empty one, wins over the label set's
    assert (class_weights(HPA2018, counts, minority_classes=[]) == 1.0).all()


def test_frequency_table_names_the_classes_of_the_label_set() -> None:
    labels = np.zeros((4, 19), dtype=np.uint8)
    labels[:, 18] = 1
    labels[0, 17] = 1
    rows = frequency_rows(HPA2021, labels, np.ones(4))
    assert [row.name for row in rows] == list(HPA2021.class_names)
    assert rows[18].num_images == 4 and rows[17].num_images == 1
    assert "Vesicles and punctate cytosolic patterns" in frequency_table(
        HPA2021, labels, np.ones(4)
    )
