"""Cell augmentations whose label follows the pixels (dim green → Negative, red → Microtubules,
yellow → Endoplasmic reticulum): pixels, targets, frequencies, seeding, config errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hpa.core.errors import HPAInputError
from hpa.core.labels import CHANNELS, HPA2018, HPA2021
from hpa.data.cells.label_augmentation import LabelAugmentation

RED, GREEN, BLUE, YELLOW = (CHANNELS.index(c) for c in ("red", "green", "blue", "yellow"))
NEGATIVE = HPA2021.class_names.index("Negative")
MICROTUBULES = HPA2021.class_names.index("Microtubules")
ER = HPA2021.class_names.index("Endoplasmic reticulum")


def rgby(seed: int = 0, size: int = 16) -> np.ndarray:
    """A random uint8 RGBY image whose four channels all differ."""
    return np.random.default_rng(seed).integers(0, 256, (size, size, 4), dtype=np.uint8)


def multi_hot(*class_ids: int) -> np.ndarray:
    target = np.zeros(HPA2021.num_classes, dtype=np.float32)
    target[list(class_ids)] = 1.0
    return target


def one_hot(class_id: int) -> np.ndarray:
    return multi_hot(class_id)


def test_negative_dims_green_only_and_relabels_negative() -> None:
    augment = LabelAugmentation(HPA2021, negative=1.0, dim_range=(0.0, 0.1))
    original = rgby()
    target = multi_hot(0, 16)
    image, new_target = augment(original.copy(), target, np.random.default_rng(1))
    for channel in (RED, BLUE, YELLOW):
        np.testing.assert_array_equal(image[..., channel], original[..., channel])
    green = original[..., GREEN].astype(float)
    assert np.all(image[..., GREEN] <= np.rint(green * 0.1))
    assert image[..., GREEN].max() <= 26 < original[..., GREEN].max()
    np.testing.assert_array_equal(new_target, one_hot(NEGATIVE))
    assert new_target.dtype == target.dtype
    np.testing.assert_array_equal(target, multi_hot(0, 16))  # the caller's target untouched


def test_dim_factor_is_drawn_from_the_range() -> None:
    augment = LabelAugmentation(HPA2021, negative=1.0, dim_range=(0.5, 0.5))
    original = np.full((4, 4, 4), 200, dtype=np.uint8)
    image, _ = augment(original.copy(), multi_hot(3), np.random.default_rng(0))
    assert np.all(image[..., GREEN] == 100)
    factors = []
    augment = LabelAugmentation(HPA2021, negative=1.0, dim_range=(0.02, 0.08))
    rng = np.random.default_rng(5)
    for _ in range(200):
        image, _ = augment(np.full((2, 2, 4), 250, np.uint8), multi_hot(3), rng)
        factors.append(image[0, 0, GREEN] / 250)
    assert 0.02 - 0.002 <= min(factors) and max(factors) <= 0.08 + 0.002
    assert max(factors) - min(factors) > 0.04  # really drawn, not a constant


def test_microtubules_copies_red_into_green() -> None:
    augment = LabelAugmentation(HPA2021, microtubules=1.0)
    original = rgby(2)
    image, target = augment(original.copy(), multi_hot(0, 5), np.random.default_rng(0))
    np.testing.assert_array_equal(image[..., GREEN], original[..., RED])
    for channel in (RED, BLUE, YELLOW):
        np.testing.assert_array_equal(image[..., channel], original[..., channel])
    np.testing.assert_array_equal(target, one_hot(MICROTUBULES))


def test_endoplasmic_reticulum_copies_yellow_into_green() -> None:
    augment = LabelAugmentation(HPA2021, endoplasmic_reticulum=1.0)
    original = rgby(3)
    image, target = augment(original.copy(), multi_hot(NEGATIVE), np.random.default_rng(0))
    np.testing.assert_array_equal(image[..., GREEN], original[..., YELLOW])
    for channel in (RED, BLUE, YELLOW):
        np.testing.assert_array_equal(image[..., channel], original[..., channel])
    np.testing.assert_array_equal(target, one_hot(ER))


def test_copy_range_scales_the_copied_marker() -> None:
    augment = LabelAugmentation(HPA2021, microtubules=1.0, copy_range=(0.6, 1.0))
    original = np.zeros((3, 3, 4), dtype=np.uint8)
    original[..., RED] = 200
    image, _ = augment(original.copy(), multi_hot(0), np.random.default_rng(0))
    assert 120 <= image[0, 0, GREEN] <= 200
    assert np.all(image[..., GREEN] == image[0, 0, GREEN])


def test_float_images_are_scaled_without_rounding() -> None:
    augment = LabelAugmentation(HPA2021, negative=1.0, dim_range=(0.25, 0.25))
    original = np.random.default_rng(0).random((4, 4, 4)).astype(np.float32)
    image, _ = augment(original.copy(), multi_hot(0), np.random.default_rng(0))
    np.testing.assert_allclose(image[..., GREEN], original[..., GREEN] * 0.25, rtol=1e-6)


def test_image_is_modified_in_place_unless_read_only() -> None:
    augment = LabelAugmentation(HPA2021, microtubules=1.0)
    image = rgby(4)
    out, _ = augment(image, multi_hot(0), np.random.default_rng(0))
    assert out is image
    frozen = rgby(4)
    frozen.flags.writeable = False
    before = frozen.copy()
    out, _ = augment(frozen, multi_hot(0), np.random.default_rng(0))
    assert out is not frozen
    np.testing.assert_array_equal(frozen, before)
    np.testing.assert_array_equal(out[..., GREEN], before[..., RED])


def test_zero_probabilities_leave_the_sample_unchanged() -> None:
    augment = LabelAugmentation(HPA2021)
    assert not augment.enabled
    original = rgby(5)
    target = multi_hot(1, 2)
    rng = np.random.default_rng(0)
    for _ in range(50):
        image, new_target = augment(original.copy(), target, rng)
        np.testing.assert_array_equal(image, original)
        assert new_target is target


def test_frequencies_match_the_probabilities() -> None:
    probabilities = {NEGATIVE: 0.1, MICROTUBULES: 0.2, ER: 0.05}
    augment = LabelAugmentation(HPA2021, negative=0.1, microtubules=0.2, endoplasmic_reticulum=0.05)
    draws = 4000
    rng = np.random.default_rng(2021)
    image = np.zeros((2, 2, 4), dtype=np.uint8)
    untouched = multi_hot(0, 1)
    counts = dict.fromkeys([*probabilities, None], 0)
    for _ in range(draws):
        _, target = augment(image, untouched, rng)
        counts[None if target is untouched else int(np.argmax(target))] += 1
    expected = {**probabilities, None: 1 - sum(probabilities.values())}
    for outcome, p in expected.items():
        sd = math.sqrt(draws * p * (1 - p))
        assert abs(counts[outcome] - draws * p) <= 3 * sd, (outcome, counts)


def test_same_seed_same_result() -> None:
    augment = LabelAugmentation(HPA2021, negative=0.3, microtubules=0.3, endoplasmic_reticulum=0.3)
    results = []
    for _ in range(2):
        rng = np.random.default_rng(77)
        results.append([augment(rgby(i), multi_hot(0), rng) for i in range(30)])
    for (image_a, target_a), (image_b, target_b) in zip(*results, strict=True):
        np.testing.assert_array_equal(image_a, image_b)
        np.testing.assert_array_equal(target_a, target_b)
    outcomes = {int(np.argmax(t)) if t.sum() == 1 else None for _, t in results[0]}
    assert len(outcomes) >= 3  # the seed exercised several branches


@pytest.mark.parametrize(
    "settings",
    [
        {"negative": -0.1},
        {"microtubules": 1.5},
        {"negative": 0.6, "microtubules": 0.3, "endoplasmic_reticulum": 0.2},
        {"negative": "often"},
        {"negative": True},
        {"negative": 0.1, "dim_range": (0.2, 0.1)},
        {"negative": 0.1, "dim_range": (0.0, 2.0)},
        {"negative": 0.1, "dim_range": (0.1,)},
        {"microtubules": 0.1, "copy_range": (-0.5, 1.0)},
    ],
)
def test_bad_settings_are_refused(settings: dict) -> None:
    with pytest.raises(HPAInputError, match="augment"):
        LabelAugmentation(HPA2021, **settings)


def test_probabilities_summing_to_one_are_accepted() -> None:
    augment = LabelAugmentation(HPA2021, negative=0.5, microtubules=0.3, endoplasmic_reticulum=0.2)
    _, target = augment(rgby(), multi_hot(0), np.random.default_rng(0))
    assert target.sum() == 1


def test_label_set_without_the_class_is_refused() -> None:
    with pytest.raises(HPAInputError, match="'Negative'.*'hpa2018'"):
        LabelAugmentation(HPA2018, negative=0.1)
    with pytest.raises(HPAInputError, match="'Negative'.*'hpa2018'"):
        LabelAugmentation.from_config(HPA2018, {"negative": 0.1, "microtubules": 0.1})


def test_hpa2018_microtubules_and_er_use_its_own_class_ids() -> None:
    augment = LabelAugmentation(HPA2018, microtubules=0.5, endoplasmic_reticulum=0.5)
    seen = set()
    rng = np.random.default_rng(0)
    target = np.zeros(HPA2018.num_classes, dtype=np.float32)
    for _ in range(40):
        _, new_target = augment(rgby(), target, rng)
        seen.add(int(np.flatnonzero(new_target)[0]))
    assert seen == {
        HPA2018.class_names.index("Microtubules"),
        HPA2018.class_names.index("Endoplasmic reticulum"),
    }


def test_from_config() -> None:
    assert LabelAugmentation.from_config(HPA2021, None) is None
    assert LabelAugmentation.from_config(HPA2021, {}) is None
    assert LabelAugmentation.from_config(HPA2021, {"negative": 0, "microtubules": 0.0}) is None
    # all off: no class needed, so a label set without Negative is fine
    assert LabelAugmentation.from_config(HPA2018, {"negative": 0.0}) is None
    augment = LabelAugmentation.from_config(
        HPA2021,
        {"negative": 0.1, "microtubules": 0.05, "dim_range": [0.0, 0.2], "copy_range": None},
    )
    assert augment is not None and augment.enabled
    assert augment.describe() == {
        "label_set": "hpa2021",
        "negative": 0.1,
        "microtubules": 0.05,
        "endoplasmic_reticulum": 0.0,
        "dim_range": [0.0, 0.2],
        "copy_range": [1.0, 1.0],
        "class_ids": {"Negative": NEGATIVE, "Microtubules": MICROTUBULES},
    }


def test_from_config_refuses_unknown_keys() -> None:
    with pytest.raises(HPAInputError, match=r"unknown key\(s\) \['er'\].*endoplasmic_reticulum"):
        LabelAugmentation.from_config(HPA2021, {"negative": 0.1, "er": 0.1})
    with pytest.raises(HPAInputError, match="mapping"):
        LabelAugmentation.from_config(HPA2021, [0.1, 0.2])  # type: ignore[arg-type]


def test_wrong_shapes_are_refused() -> None:
    augment = LabelAugmentation(HPA2021, negative=1.0)
    with pytest.raises(ValueError, match="H x W x 4"):
        augment(np.zeros((4, 8, 8), np.uint8), multi_hot(0), np.random.default_rng(0))
    with pytest.raises(ValueError, match="19 values"):
        augment(rgby(), np.zeros(28, np.float32), np.random.default_rng(0))


def test_from_config_reads_a_hydra_node() -> None:
    from omegaconf import OmegaConf

    node = OmegaConf.create(
        {"negative": 0.05, "microtubules": 0.02, "dim_range": [0.0, 0.1], "copy_range": [0.6, 1]}
    )
    augment = LabelAugmentation.from_config(HPA2021, node)
    assert augment is not None
    assert augment.dim_range == (0.0, 0.1) and augment.copy_range == (0.6, 1.0)
