"""The cache and dataset steps of a data module: one RGBYDataset per split, from the validated
rows of ``data.root`` and, in the train split, the used images of the external roots.

Each root gets its own packed cache (hpa.data.cache): data.root's holds its validated rows, an
external root's all its readable rows, so that a cache stays the same whichever images a split
or a duplicate search drops.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import albumentations as A
import numpy as np

from hpa.data.cache import PackedImages, ensure_cache
from hpa.data.dataset import RGBYDataset
from hpa.data.external import ExternalRoot, MultiRootDataset
from hpa.data.split import SPLITS
from hpa.data.table import ImageTable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SplitCaches:
    """``root``: the cache of the rows of data.root's (validated) table; ``externals[k]``: the
    cache of the readable rows of external root k, None when none of its images is used."""

    root: PackedImages
    externals: tuple[PackedImages | None, ...]


def build_split_caches(
    table: ImageTable,
    externals: Sequence[ExternalRoot],
    read_size: int,
    cache_dir: str | Path | None,
) -> SplitCaches:
    """Build (or reuse) the caches of ``table`` and of the external roots at ``read_size``."""
    root = ensure_cache(table.image_dir, table.ids, read_size, cache_dir=cache_dir)
    external_caches = []
    for external in externals:
        if not external.used.any():
            external_caches.append(None)
            continue
        readable_ids = external.ids[external.readable]
        external_caches.append(
            ensure_cache(external.image_dir, readable_ids, read_size, cache_dir=cache_dir)
        )
    return SplitCaches(root, tuple(external_caches))


def build_split_datasets(
    table: ImageTable,
    assignment: np.ndarray,
    externals: Sequence[ExternalRoot],
    image_size: int,
    read_size: int,
    train_transform: A.Compose | None,
    evaluation_transform: A.Compose | None,
    caches: SplitCaches | None = None,
) -> dict[str, RGBYDataset]:
    """The dataset of each of SPLITS: the rows of ``table`` that ``assignment`` puts there,
    read at ``read_size`` and given at ``image_size``; the train split also holds the used
    images of ``externals`` (after data.root's, root by root) and has ``train_transform``, the
    others ``evaluation_transform``. Read from ``caches`` when given."""
    datasets = {}
    for name in SPLITS:
        rows = np.flatnonzero(assignment == name)
        datasets[name] = RGBYDataset(
            table.image_dir,
            table.ids[rows],
            table.labels[rows],
            image_size,
            augmentation=train_transform if name == "train" else evaluation_transform,
            cache=None if caches is None else caches.root,
            cache_rows=rows,
            load_size=read_size,
        )
    external_parts = []
    for index, external in enumerate(externals):
        cache = None if caches is None else caches.externals[index]
        part = _external_dataset(external, image_size, read_size, train_transform, cache)
        if part is not None:
            external_parts.append(part)
    if external_parts:
        datasets["train"] = MultiRootDataset([datasets["train"], *external_parts])
        log.info("train split with external images: %d images", len(datasets["train"]))
    return datasets


def _external_dataset(
    external: ExternalRoot,
    image_size: int,
    read_size: int,
    train_transform: A.Compose | None,
    cache: PackedImages | None,
) -> RGBYDataset | None:
    """The used images of one external root; None when it has none."""
    used_rows = np.flatnonzero(external.used)
    if not len(used_rows):
        return None
    cache_rows = None
    if cache is not None:  # the cache holds the readable rows
        cache_rows = np.searchsorted(np.flatnonzero(external.readable), used_rows)
    return RGBYDataset(
        external.image_dir,
        external.ids[used_rows],
        external.labels[used_rows],
        image_size,
        augmentation=train_transform,
        cache=cache,
        cache_rows=cache_rows,
        load_size=read_size,
    )
