"""Cell masks computed once per image and kept on disk, one file per image.

Segmenting a 2048 px image takes about a second, the whole 2021 training set hours; every epoch
of a single-cell model needs the masks again. The cache keeps them as::

    CACHE_DIR/{provider}-{settings hash}/{ID}.png       uint16 label image, 0 = background
    CACHE_DIR/{provider}-{settings hash}/settings.json   the provider and settings, for people

The folder is named by the provider and a hash of its settings (``Segmenter.settings_key``), so
changing a setting segments into a new folder instead of reusing masks made with the old one.
A 16-bit PNG is lossless, compact for label images (long runs of one value) and opens in any
image viewer. Each mask is written to a temporary file and renamed: a killed run leaves complete
masks and at most hidden ``.{ID}.png.*.tmp`` files, which are never read, and a re-run skips the
images whose mask exists and segments the rest. Shards (``shard=(index, count)``) split the ids of
one set between the jobs of a cluster array writing into the same folder.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from hpa.core.errors import HPAInputError
from hpa.core.io import write_bytes, write_json
from hpa.data.cells.base import Segmenter
from hpa.data.cells.image_pool import for_each_image

log = logging.getLogger(__name__)

MAX_LABEL = np.iinfo(np.uint16).max
"""Most cells one mask file can hold (an HPA image has tens)."""


class MaskCache:
    """The cached masks of one segmenter: ``ensure_masks`` fills the cache, ``load`` reads it."""

    def __init__(self, cache_dir: str | Path, segmenter: Segmenter) -> None:
        self.segmenter = segmenter
        self.folder = Path(cache_dir) / segmenter.settings_key()

    def path(self, sample_id: str) -> Path:
        return self.folder / f"{sample_id}.png"

    def has(self, sample_id: str) -> bool:
        return self.path(sample_id).is_file()

    def load(self, sample_id: str) -> np.ndarray:
        """The int32 (H, W) cell labels of ``sample_id`` (0 background, 1..K cells)."""
        path = self.path(sample_id)
        if not path.is_file():
            raise HPAInputError(
                f"no cell mask for sample {sample_id!r} at {path}: run ensure_masks first"
            )
        return read_mask(path)

    def ensure_masks(
        self,
        image_dir: str | Path,
        ids: Sequence[str],
        processes: int = 1,
        shard: tuple[int, int] = (0, 1),
    ) -> list[str]:
        """Segment the ids of this shard that have no mask yet; the ids segmented now.

        ``processes`` > 1 segments in that many worker processes (at most one per missing
        image); 1 or less segments in this process. ``shard=(index, count)`` keeps every
        ``count``-th id starting at ``index``: ``count`` jobs with indices 0..count-1 cover the
        ids exactly once.
        """
        ids = shard_ids(ids, shard)
        write_json(self.folder / "settings.json", self._description())
        missing = [sample_id for sample_id in ids if not self.has(sample_id)]
        log.info(
            "cell masks in %s: %d of %d cached, segmenting %d",
            self.folder,
            len(ids) - len(missing),
            len(ids),
            len(missing),
        )
        if not missing:
            return []
        description = f"segmenting ({self.segmenter.name})"
        for_each_image(_segment_and_store, self, str(image_dir), missing, processes, description)
        log.info("cell masks in %s: segmented %d images", self.folder, len(missing))
        return missing

    def _description(self) -> dict:
        return {"name": self.segmenter.name, "settings": self.segmenter.settings()}


def shard_ids(ids: Sequence[str], shard: tuple[int, int]) -> list[str]:
    """Every ``count``-th id of ``ids`` starting at ``index`` (``shard = (index, count)``)."""
    index, count = (int(value) for value in shard)
    if count < 1 or not 0 <= index < count:
        raise HPAInputError(f"shard must be (index, count) with 0 <= index < count, got {shard}")
    return [str(sample_id) for sample_id in list(ids)[index::count]]


def read_mask(path: Path) -> np.ndarray:
    """The int32 (H, W) cell labels stored at ``path`` by ``write_mask``."""
    labels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if labels is None:
        raise HPAInputError(f"cannot decode cell mask {path}; delete it to segment it again")
    return labels.astype(np.int32)


def write_mask(path: Path, labels: np.ndarray) -> None:
    """Store ``labels`` as a uint16 PNG at ``path``, atomically (temporary file, then rename)."""
    if labels.ndim != 2 or labels.min(initial=0) < 0 or labels.max(initial=0) > MAX_LABEL:
        raise HPAInputError(
            f"cannot store the mask {path.name}: expected a 2-d label image with labels 0.."
            f"{MAX_LABEL}, got shape {labels.shape} and labels {labels.min()}..{labels.max()}"
        )
    ok, encoded = cv2.imencode(".png", labels.astype(np.uint16), [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise HPAInputError(f"cannot encode the mask {path.name} as PNG")
    write_bytes(path, encoded.tobytes())


def _segment_and_store(cache: MaskCache, image_dir: str, sample_id: str) -> None:
    """Segment one sample and write its mask (in this process or a pool worker)."""
    write_mask(cache.path(sample_id), cache.segmenter.segment_sample(image_dir, sample_id))
