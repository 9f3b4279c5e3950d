"""The settings of a synthetic cell set: checked once, and recorded in its manifest.

Two sets with equal settings (and FORMAT_VERSION) hold byte-identical files, which is what lets
ensure_cell_set reuse a set by comparing manifests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hpa.data.synthetic.scene import MIN_IMAGE_SIZE

FORMAT_VERSION = 1
"""Bumped whenever the same settings would draw different files."""

DEFAULT_SIZES: tuple[int, ...] = (256, 320, 384)
DEFAULT_NEGATIVE_FRACTION = 0.1


def _is_integer(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | np.integer)


@dataclass(frozen=True)
class CellSetSettings:
    """What a cell set is drawn from; each image's side is drawn from ``sizes`` (square images)."""

    num_train: int
    num_test: int = 0
    sizes: tuple[int, ...] = DEFAULT_SIZES
    seed: int = 0
    negative_fraction: float = DEFAULT_NEGATIVE_FRACTION

    def __post_init__(self) -> None:
        for name, minimum in (("num_train", 1), ("num_test", 0), ("seed", 0)):
            value = getattr(self, name)
            if not _is_integer(value) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
            object.__setattr__(self, name, int(value))
        sizes = tuple(self.sizes) if isinstance(self.sizes, Sequence | np.ndarray) else ()
        if not sizes or not all(_is_integer(s) and s >= MIN_IMAGE_SIZE for s in sizes):
            raise ValueError(
                f"sizes must be a non-empty sequence of integers >= {MIN_IMAGE_SIZE}, "
                f"got {self.sizes!r}"
            )
        object.__setattr__(self, "sizes", tuple(int(s) for s in sizes))
        fraction = self.negative_fraction
        if (
            isinstance(fraction, bool)
            or not isinstance(fraction, int | float)
            or not math.isfinite(fraction)
            or not 0.0 <= fraction < 1.0
        ):
            raise ValueError(f"negative_fraction must be a number in [0, 1), got {fraction!r}")
        object.__setattr__(self, "negative_fraction", float(fraction))

    def to_manifest(self) -> dict:
        """The json-ready manifest of a set drawn with these settings."""
        return {
            "format_version": FORMAT_VERSION,
            "num_train": self.num_train,
            "num_test": self.num_test,
            "sizes": list(self.sizes),
            "seed": self.seed,
            "negative_fraction": self.negative_fraction,
        }
