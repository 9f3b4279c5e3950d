"""Augmentations whose label follows the pixels: dim the protein → Negative, copy a marker →
that marker's class.

Green is the protein of interest; red (microtubules), yellow (endoplasmic reticulum) and blue
(nucleus) are reference stains that look the same in every sample. So a sample can be turned
into one whose label is known from its pixels alone:

- dim the green channel (multiply by a factor drawn from ``dim_range``, e.g. [0, 0.1]): no protein
  signal is left, the sample is **Negative**;
- copy the red channel into green: the protein is where the microtubules are, **Microtubules**;
- copy the yellow channel into green: **Endoplasmic reticulum**.

The new target replaces the old one entirely (one-hot), whatever the sample was labelled before.
Top teams of the 2021 Kaggle single-cell competition (HPA-SCC) trained with these, e.g. team
AllDataAreExt & Galixir (github.com/jxzly/AllDataAreExt-Galixir-Kaggle-HPA-2021-Solution): with a
small probability green times U[0, 0.1] labelled Negative, to teach the model what an unstained
cell looks like (Negative is the label of many test cells and rare in the weak image labels); with
a small probability green set to red or yellow times U[0.6, 1.0] labelled Microtubules or ER,
which adds clean, single-label examples of two classes. ``copy_range`` is that [0.6, 1.0] factor
(default 1: an exact copy).

This is a plain callable, not an albumentations transform: albumentations transforms cannot
change a multilabel target. It takes the generator from its caller because the project reseeds
augmentation per sample for an exact resume (``hpa.data.epoch_seeding``, ``seed_augmentation`` in
``hpa.data.dataset``): a dataset derives the generator from the sample's seed,
``np.random.default_rng(index.seed)``, so a sample gets the same augmentation whichever worker
reads it.

    augment = LabelAugmentation.from_config(label_set, config.get("augment"))  # None when off
    if augment is not None:
        image, target = augment(image, target, np.random.default_rng(index.seed))

Layering: imports hpa.core only.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from hpa.core.errors import HPAInputError
from hpa.core.labels import CHANNELS, LabelSet

NEGATIVE = "Negative"
MICROTUBULES = "Microtubules"
ENDOPLASMIC_RETICULUM = "Endoplasmic reticulum"

_GREEN = CHANNELS.index("green")
_SOURCE_CHANNEL = {
    MICROTUBULES: CHANNELS.index("red"),
    ENDOPLASMIC_RETICULUM: CHANNELS.index("yellow"),
}

CONFIG_KEYS: tuple[str, ...] = (
    "negative",
    "microtubules",
    "endoplasmic_reticulum",
    "dim_range",
    "copy_range",
)
"""The keys of an ``augment`` config node: the names of ``LabelAugmentation.__init__``."""


class LabelAugmentation:
    """With probability ``negative`` dim green (target: one-hot Negative), else with probability
    ``microtubules`` copy red into green (one-hot Microtubules), else with probability
    ``endoplasmic_reticulum`` copy yellow into green (one-hot Endoplasmic reticulum); else leave
    the sample as it is.

    At most one of the three per sample: one uniform draw u picks the interval of [0, 1) it falls
    in, [0, negative), [negative, negative + microtubules), ..., so the probabilities must sum to
    at most 1. A dimmed green is green times a factor drawn from ``dim_range``; a copied marker is
    the marker times a factor drawn from ``copy_range`` (default (1, 1): an exact copy).

    Raises HPAInputError for a probability outside [0, 1], probabilities summing over 1, a range
    that is not 0 <= low <= high <= 1, or a label set without the class an enabled augmentation
    produces (HPA2018 has Microtubules and Endoplasmic reticulum but no Negative).
    """

    def __init__(
        self,
        label_set: LabelSet,
        negative: float = 0.0,
        microtubules: float = 0.0,
        endoplasmic_reticulum: float = 0.0,
        dim_range: tuple[float, float] = (0.0, 0.1),
        copy_range: tuple[float, float] = (1.0, 1.0),
    ) -> None:
        self.label_set = label_set
        self.probabilities: dict[str, float] = {
            NEGATIVE: _probability("negative", negative),
            MICROTUBULES: _probability("microtubules", microtubules),
            ENDOPLASMIC_RETICULUM: _probability("endoplasmic_reticulum", endoplasmic_reticulum),
        }
        total = sum(self.probabilities.values())
        if total > 1.0 + 1e-9:
            raise HPAInputError(
                f"augment: negative + microtubules + endoplasmic_reticulum = {total:g} is over 1 "
                "(at most one of them is applied to a sample, so they share [0, 1))"
            )
        self.dim_range = _factor_range("dim_range", dim_range)
        self.copy_range = _factor_range("copy_range", copy_range)
        self.class_ids: dict[str, int] = {
            name: _class_id(label_set, name, key)
            for (name, probability), key in zip(
                self.probabilities.items(), CONFIG_KEYS[:3], strict=True
            )
            if probability > 0
        }

    @classmethod
    def from_config(cls, label_set: LabelSet, config: Mapping | None) -> LabelAugmentation | None:
        """The augmentation of an ``augment`` config node; None when the node is None or every
        probability is 0 (nothing to apply, and no class needed from the label set).

        Keys: ``negative``, ``microtubules``, ``endoplasmic_reticulum`` (probabilities),
        ``dim_range``, ``copy_range`` (``[low, high]``); any other key is an HPAInputError.
        """
        if config is None:
            return None
        if not isinstance(config, Mapping):
            raise HPAInputError(f"augment must be a mapping of {list(CONFIG_KEYS)}, got {config!r}")
        unknown = sorted(str(key) for key in config if key not in CONFIG_KEYS)
        if unknown:
            raise HPAInputError(
                f"augment: unknown key(s) {unknown}; known keys: {list(CONFIG_KEYS)}"
            )
        settings = {key: config[key] for key in CONFIG_KEYS if config.get(key) is not None}
        augmentation = cls(label_set, **settings)
        return augmentation if augmentation.enabled else None

    @property
    def enabled(self) -> bool:
        """Whether any of the three can happen (some probability is above 0)."""
        return any(probability > 0 for probability in self.probabilities.values())

    def describe(self) -> dict:
        """Plain containers, for the run log and hparams."""
        return {
            "label_set": self.label_set.name,
            "negative": self.probabilities[NEGATIVE],
            "microtubules": self.probabilities[MICROTUBULES],
            "endoplasmic_reticulum": self.probabilities[ENDOPLASMIC_RETICULUM],
            "dim_range": list(self.dim_range),
            "copy_range": list(self.copy_range),
            "class_ids": dict(self.class_ids),
        }

    def __repr__(self) -> str:
        return f"LabelAugmentation({self.describe()})"

    def __call__(
        self, image: np.ndarray, target: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Augment one H x W x 4 RGBY image (channels last, in ``CHANNELS`` order) and its target.

        ``rng`` is the caller's: derive it from the sample's seed (``SeededIndex.seed``) so the
        draw repeats on resume and does not depend on the worker. Every call draws one uniform
        number, and one more (the factor) when an augmentation applies.

        The image is modified **in place** when an augmentation applies (its green channel is
        overwritten) and returned; a read-only array (a memory-mapped cache row) is copied first.
        Do not pass an array other code still reads. The target is never modified: when an
        augmentation applies a new one-hot vector of the target's dtype is returned (targets are
        often rows of a dataset's label matrix); otherwise ``target`` itself is returned.
        """
        if image.ndim != 3 or image.shape[-1] != len(CHANNELS):
            raise ValueError(
                f"expected an H x W x {len(CHANNELS)} image ({', '.join(CHANNELS)}, channels "
                f"last), got shape {image.shape}"
            )
        if target.shape != (self.label_set.num_classes,):
            raise ValueError(
                f"expected a target of {self.label_set.num_classes} values (label set "
                f"{self.label_set.name}), got shape {target.shape}"
            )
        name = self._draw(rng)
        if name is None:
            return image, target
        if not image.flags.writeable:
            image = image.copy()
        if name == NEGATIVE:
            factor = rng.uniform(*self.dim_range)
            image[..., _GREEN] = _scaled(image[..., _GREEN], factor)
        else:
            factor = rng.uniform(*self.copy_range)
            image[..., _GREEN] = _scaled(image[..., _SOURCE_CHANNEL[name]], factor)
        one_hot = np.zeros_like(target)
        one_hot[self.class_ids[name]] = 1
        return image, one_hot

    def _draw(self, rng: np.random.Generator) -> str | None:
        """Which augmentation applies: the interval of [0, 1) that one uniform draw falls in."""
        u = rng.random()
        edge = 0.0
        for name, probability in self.probabilities.items():
            edge += probability
            if u < edge:
                return name
        return None


def _scaled(channel: np.ndarray, factor: float) -> np.ndarray:
    """``channel * factor`` in the channel's dtype (integers rounded; factor is in [0, 1], so
    nothing overflows). A factor of 1 is the channel itself, bit for bit."""
    if factor == 1.0:
        return channel
    scaled = channel * factor
    if np.issubdtype(channel.dtype, np.integer):
        scaled = np.rint(scaled)
    return scaled.astype(channel.dtype)


def _probability(key: str, value: object) -> float:
    probability = _number(key, value)
    if not 0.0 <= probability <= 1.0:
        raise HPAInputError(f"augment.{key}={value!r} is not a probability in [0, 1]")
    return probability


def _factor_range(key: str, value: object) -> tuple[float, float]:
    """A ``[low, high]`` pair with 0 <= low <= high <= 1: a factor above 1 would brighten, not
    dim, and a copied marker brighter than the marker is not what the label says."""
    if isinstance(value, str | bytes) or not hasattr(value, "__len__") or len(value) != 2:
        raise HPAInputError(f"augment.{key}={value!r} must be a pair [low, high]")
    low, high = (_number(key, v) for v in value)
    if not 0.0 <= low <= high <= 1.0:
        raise HPAInputError(f"augment.{key}={[low, high]} must satisfy 0 <= low <= high <= 1")
    return low, high


def _number(key: str, value: object) -> float:
    if isinstance(value, bool):
        raise HPAInputError(f"augment.{key}={value!r} must be a number, not a boolean")
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise HPAInputError(f"augment.{key}={value!r} is not a number") from None


def _class_id(label_set: LabelSet, name: str, key: str) -> int:
    """The id of class ``name`` in ``label_set``, or an HPAInputError naming both."""
    if name not in label_set.class_names:
        raise HPAInputError(
            f"augment.{key} > 0 relabels samples as {name!r}, but label set "
            f"{label_set.name!r} has no class of that name; set augment.{key}=0 or use a label "
            f"set with a {name!r} class (e.g. labels=hpa2021)"
        )
    return label_set.class_names.index(name)
