"""Multilabel-aware oversampling of minority classes.

Each class of the run's label set gets a weight (``class_weights``): from the class counts of
the train split the run trains on (hpa.data.class_statistics), or, for ``strategy=minority``,
from the classes it names (``data.sampler.minority_classes``, else the label set's). An image's
weight is the largest weight among its classes (its rarest labels decide), and an epoch holds
each image in proportion to its weight, in one of two ways (``DRAWS``): "repeat" puts every
image in the epoch at least once and an image of weight w about w times (repeat-factor
sampling, weights taken relative to the smallest), so the epoch grows with the weights;
"replacement" draws as many images as the split holds, with replacement, so that about a third
of the images are missing from any one epoch. Drawing an image draws all its labels, so the
resulting class frequencies are not simply proportional to the class weights:
``expected_class_frequency`` computes them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DistributedSampler, Sampler

from hpa.core.errors import HPAInputError
from hpa.core.labels import LabelSet
from hpa.data.epoch_seeding import epoch_generator

logger = logging.getLogger(__name__)

STRATEGIES: tuple[str, ...] = ("minority", "inverse_frequency")
DRAWS: tuple[str, ...] = ("repeat", "replacement")

_UNLABELLED_IMAGE_WEIGHT = 1.0
"""Weight of an image with no label (max over an empty set of classes): the neutral weight."""


def class_weights(
    label_set: LabelSet,
    class_counts: Sequence[int] | np.ndarray,
    strategy: str = "minority",
    minority_classes: Sequence[int] | None = None,
    boost: float = 8.0,
    power: float = 0.5,
    max_weight: float = 50.0,
) -> np.ndarray:
    """One weight per class of ``label_set``, from the image count of each class in the train
    split (``class_counts``).

    "minority": ``boost`` for ``minority_classes`` (None: the label set's), 1 for the others.
    "inverse_frequency": ``(max_count / count_c) ** power`` clipped to ``max_weight``; a class
    with no images gets 1 (it can't be drawn anyway).
    """
    counts = np.asarray(class_counts, dtype=np.float64)
    if counts.shape != (label_set.num_classes,) or (counts < 0).any():
        raise HPAInputError(
            f"class counts must be {label_set.num_classes} non-negative numbers (label set "
            f"{label_set.name}), got shape {counts.shape}"
        )
    if strategy == "minority":
        return _minority_weights(label_set, minority_classes_of(label_set, minority_classes), boost)
    if strategy == "inverse_frequency":
        return _inverse_frequency_weights(counts, power, max_weight)
    raise HPAInputError(f"unknown oversampling strategy {strategy!r}; expected one of {STRATEGIES}")


def minority_classes_of(label_set: LabelSet, configured: Sequence[int] | None) -> tuple[int, ...]:
    """``data.sampler.minority_classes`` when set (``configured``), else the label set's own."""
    if configured is None:
        return label_set.minority_classes
    return label_set.check_class_ids(configured, "data.sampler.minority_classes")


def check_minority_classes(label_set: LabelSet, minority_classes: Sequence[int]) -> None:
    """Refuse oversampling by ``strategy=minority`` with no minority class to boost."""
    if not minority_classes:
        raise HPAInputError(
            f"data.oversample=true with data.sampler.strategy=minority, but there are no minority "
            f"classes to boost: data.sampler.minority_classes is empty or null, and label set "
            f"{label_set.name} names none. Use data.sampler.strategy=inverse_frequency (weights "
            "from the train split's class counts), or name the classes with "
            "data.sampler.minority_classes=[...]"
        )


def image_weights(labels: np.ndarray, class_weights: np.ndarray) -> np.ndarray:
    """Each image's weight: the max of its classes' weights (1 for an image with no label)."""
    labels = np.asarray(labels)
    weights_of_classes = np.asarray(class_weights, dtype=np.float64)
    if labels.ndim != 2 or labels.shape[1] != weights_of_classes.shape[0]:
        raise ValueError(
            f"labels {labels.shape} must be N x {weights_of_classes.shape[0]} (one column per class)"
        )
    has_class = labels.astype(bool)
    weight_per_label = np.where(has_class, weights_of_classes[np.newaxis, :], -np.inf)
    weights = weight_per_label.max(axis=1)
    weights[~has_class.any(axis=1)] = _UNLABELLED_IMAGE_WEIGHT
    return weights


def expected_class_frequency(labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Expected fraction of drawn images carrying each class, drawing proportional to weights.

    Uniform weights give the class frequencies of a plain epoch.
    """
    labels = np.asarray(labels, dtype=np.float64)
    draw_probabilities = _checked_weights(weights)
    if labels.ndim != 2 or labels.shape[0] != draw_probabilities.shape[0]:
        raise ValueError(f"labels {labels.shape} must have one row per weight ({len(weights)})")
    draw_probabilities = draw_probabilities / draw_probabilities.sum()
    return draw_probabilities @ labels


def checked_draws(draws: str) -> str:
    """``draws`` if it is one of ``DRAWS``; HPAInputError naming the setting otherwise."""
    if draws not in DRAWS:
        raise HPAInputError(f"data.sampler.draws must be one of {DRAWS}, got {draws!r}")
    return draws


class OversamplingSampler(Sampler[int]):
    """An epoch of indices in proportion to ``weights`` (zero: never drawn).

    ``draws="replacement"``: ``num_samples`` draws (default: one per weight) with replacement,
    with probability proportional to the weights. ``draws="repeat"``: index i appears
    floor(r_i) times plus once more with probability about frac(r_i), r_i = weight_i / the
    smallest positive weight, in a shuffled order; every epoch has the same length,
    sum(floor(r)) + sum(frac(r)) rounded half up, and every index of positive weight appears in it.

    The draws of epoch ``e`` come from a torch.Generator seeded from (``seed``, ``e``): each
    epoch differs and any epoch can be repeated. Call ``set_epoch`` before each epoch (Lightning
    does for a DataLoader's sampler).

    Under DDP give ``num_replicas`` and ``rank`` (or use ``DistributedOversamplingSampler``): every
    rank makes the same epoch draw, rounded up to a multiple of ``num_replicas`` so that all ranks
    run the same number of batches, and takes every ``num_replicas``-th draw from ``rank`` on, so
    the ranks share one epoch's draws without overlap. ``len`` is then the share of one rank.
    """

    def __init__(
        self,
        weights: Sequence[float] | np.ndarray,
        num_samples: int | None = None,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        draws: str = "replacement",
    ) -> None:
        self.weights = torch.from_numpy(_checked_weights(weights))
        self.draws = checked_draws(draws)
        if draws == "repeat":
            if num_samples is not None:
                raise ValueError("num_samples is set by the weights when draws='repeat'")
            factors = self.weights / self.weights[self.weights > 0].min()
            self.whole_repeats = factors.floor().long()
            self.fractions = factors - factors.floor()
            self.extra_draws = math.floor(float(self.fractions.sum()) + 0.5)
            total = int(self.whole_repeats.sum()) + self.extra_draws
        else:
            total = len(self.weights) if num_samples is None else int(num_samples)
        if total <= 0:
            raise ValueError(f"num_samples must be positive, got {num_samples!r}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside 0..{num_replicas - 1}")
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        self.num_samples = math.ceil(total / self.num_replicas)  # per rank
        self.total_size = self.num_samples * self.num_replicas
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        generator = epoch_generator(self.seed, self.epoch)
        if self.draws == "replacement":
            drawn = torch.multinomial(
                self.weights, self.total_size, replacement=True, generator=generator
            )
        else:
            drawn = self._repeated(generator)
        return iter(drawn[self.rank :: self.num_replicas].tolist())

    def _repeated(self, generator: torch.Generator) -> torch.Tensor:
        """One "repeat" epoch, padded with its own first indices to ``total_size`` (DDP)."""
        indices = torch.arange(len(self.weights)).repeat_interleave(self.whole_repeats)
        if self.extra_draws:
            extra = torch.multinomial(
                self.fractions, self.extra_draws, replacement=False, generator=generator
            )
            indices = torch.cat([indices, extra])
        indices = indices[torch.randperm(len(indices), generator=generator)]
        return torch.cat([indices, indices[: self.total_size - len(indices)]])

    def __len__(self) -> int:
        return self.num_samples


class DistributedOversamplingSampler(OversamplingSampler, DistributedSampler):
    """``OversamplingSampler`` sharded over the DDP ranks. Being a ``DistributedSampler``,
    Lightning uses it as it is (and calls its ``set_epoch``) instead of wrapping it in a
    ``DistributedSamplerWrapper``, which would not pass ``set_epoch`` on (Lightning 2.x)."""

    shuffle = True
    drop_last = False

    def __init__(
        self,
        weights: Sequence[float] | np.ndarray,
        num_replicas: int,
        rank: int,
        num_samples: int | None = None,
        seed: int = 0,
        draws: str = "replacement",
    ) -> None:
        OversamplingSampler.__init__(self, weights, num_samples, seed, num_replicas, rank, draws)


class ClassFrequency(NamedTuple):
    class_id: int
    name: str
    num_images: int
    uniform: float
    """Expected fraction of drawn images carrying the class without oversampling."""
    weighted: float
    """Expected fraction with oversampling."""


def frequency_rows(
    label_set: LabelSet, labels: np.ndarray, weights: np.ndarray
) -> list[ClassFrequency]:
    """Per class of ``label_set``: its image count and expected per-epoch frequency before and
    after weighting."""
    labels = np.asarray(labels)
    uniform = expected_class_frequency(labels, np.ones(len(labels)))
    weighted = expected_class_frequency(labels, weights)
    counts = labels.astype(np.int64).sum(axis=0)
    return [
        ClassFrequency(
            class_id=class_id,
            name=label_set.class_names[class_id],
            num_images=int(counts[class_id]),
            uniform=float(uniform[class_id]),
            weighted=float(weighted[class_id]),
        )
        for class_id in range(labels.shape[1])
    ]


def frequency_table(label_set: LabelSet, labels: np.ndarray, weights: np.ndarray) -> str:
    """A text table for logging: each class's expected per-epoch frequency, uniform vs weighted."""
    lines = [f"{'id':>2}  {'class':<30} {'images':>7} {'uniform':>8} {'weighted':>8} {'factor':>6}"]
    for row in frequency_rows(label_set, labels, weights):
        factor = f"{row.weighted / row.uniform:6.2f}" if row.uniform > 0 else f"{'-':>6}"
        lines.append(
            f"{row.class_id:>2}  {row.name:<30} {row.num_images:>7} "
            f"{row.uniform:>8.2%} {row.weighted:>8.2%} {factor}"
        )
    return "\n".join(lines)


def _minority_weights(
    label_set: LabelSet, minority_classes: tuple[int, ...], boost: float
) -> np.ndarray:
    if not boost > 0:
        raise HPAInputError(f"oversampling boost must be positive, got {boost!r}")
    weights = np.ones(label_set.num_classes, dtype=np.float64)
    weights[list(minority_classes)] = boost
    return weights


def _inverse_frequency_weights(counts: np.ndarray, power: float, max_weight: float) -> np.ndarray:
    if not power >= 0 or not max_weight >= 1:
        raise HPAInputError(
            f"inverse_frequency needs power >= 0 and max_weight >= 1, got {power!r}, {max_weight!r}"
        )
    weights = np.ones(len(counts), dtype=np.float64)
    present = counts > 0
    if present.any():
        weights[present] = (counts.max() / counts[present]) ** power
    return np.minimum(weights, max_weight)


def _checked_weights(weights: Sequence[float] | np.ndarray) -> np.ndarray:
    values = np.asarray(weights, dtype=np.float64)
    if values.ndim != 1 or len(values) == 0:
        raise ValueError(f"weights must be a non-empty 1-d sequence, got shape {values.shape}")
    if not np.isfinite(values).all() or (values < 0).any() or not values.sum() > 0:
        raise ValueError("weights must be finite, non-negative and not all zero")
    return values
