"""One square crop per cell, cut once from every image and cached, for a cell-crop classifier.

A single-cell model (the Kaggle 2021 task) looks at one cell at a time. Cutting the crops from the
full-size images every epoch would decode four large PNGs per image again and again, so
``CropCache`` cuts them once per (crop settings, segmenter settings) and keeps them as::

    CACHE/{provider}-s{size}-{settings hash}/{ID}_cell_ids.npy   int32 (K,), ascending
    CACHE/{provider}-s{size}-{settings hash}/{ID}_crops.npy      uint8 (K, size, size, 4) RGBY
    CACHE/{provider}-s{size}-{settings hash}/settings.json       the settings, for people

Row k of the crops file is the crop of cell ``cell_ids[k]`` (its *position* k). The folder's hash
covers the crop settings and the mask cache's segmenter key, so other settings crop into another
folder instead of mixing with these crops.

Why two ``.npy`` files and not one ``.npz``: a DataLoader worker reads one crop per item, in
random order. A ``.npy`` file is a short header then the raw array, so ``load_crop`` reads the
header and exactly the bytes of one crop (one open, two small reads); an ``.npz`` member can
only be read whole (all K crops of the image, or inflated from a zip) and cannot be memory-mapped.
Each file is written atomically (temporary name, then rename), the ids first and the crops last;
an image counts as cached only when both exist, so a killed run leaves whole files and a re-run
crops only the images it had not finished.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage

from hpa.core.errors import HPAInputError
from hpa.core.io import write_atomic, write_json
from hpa.data.cells.image_pool import for_each_image
from hpa.data.cells.mask_cache import MaskCache
from hpa.data.reader import read_sample

log = logging.getLogger(__name__)

CROP_VERSION = 1
"""Part of the folder hash: bump it when a change of ``crop_cells`` changes the crops, so that
crops cut by the old code are not reused."""

CROP_CHANNELS = 4
"""Channels of a cached crop (RGBY), its last axis."""

_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}
"""The .npy header versions np.save writes for a plain array (2.0 only for huge headers)."""


# --------------------------------------------------------------------------------------------
# Cutting the crops of one image
# --------------------------------------------------------------------------------------------


def crop_cells(
    image: np.ndarray,
    cells: np.ndarray,
    size: int,
    *,
    margin: float = 0.1,
    mask_others: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """The cell ids (K,) int32, ascending, and their crops (K, size, size, C) uint8.

    ``image`` is (H, W, C) channels-last (RGBY: C = 4), ``cells`` the (H, W) label image (0
    background, cells 1..K, gaps allowed). Each crop is a square window centred (to the nearest
    pixel) on the centre of the cell's bounding box, whose side is the box's longer side times
    ``1 + 2 * margin``: a cell fills its crop the same way whatever the image's resolution or the
    cell's size. Parts of the window outside the image are zeros; the window is then resized to
    ``size`` (INTER_AREA when shrinking, INTER_LINEAR when growing).

    ``mask_others`` zeroes, in every channel, the pixels of the *other* cells in the window
    (background is kept): a neighbour's stain pattern would otherwise show up in this cell's crop
    and teach the model the neighbour's labels as this cell's. Bounding boxes come from one
    ``ndimage.find_objects`` pass, so the cost is one scan of the labels plus the windows.
    """
    _check_crop_inputs(image, cells, size, margin)
    image = np.ascontiguousarray(image)  # a strided view (moveaxis) would be copied per window
    boxes = ndimage.find_objects(cells)
    cell_ids = np.array(
        [label for label, box in enumerate(boxes, start=1) if box is not None], dtype=np.int32
    )
    crops = np.empty((len(cell_ids), size, size, image.shape[2]), dtype=np.uint8)
    for position, cell_id in enumerate(cell_ids):
        window = square_window(boxes[cell_id - 1], margin)
        crops[position] = _resize(_cut(image, cells, cell_id, window, mask_others), size)
    return cell_ids, crops


def square_window(box: tuple[slice, slice], margin: float) -> tuple[int, int, int]:
    """(top, left, side) in pixels of the crop window of a cell whose bounding box is ``box``;
    may reach outside the image."""
    rows, cols = box
    longer = max(rows.stop - rows.start, cols.stop - cols.start)
    side = max(1, _round_half_up(longer * (1 + 2 * margin)))
    top = _round_half_up((rows.start + rows.stop - side) / 2)
    left = _round_half_up((cols.start + cols.stop - side) / 2)
    return top, left, side


def _round_half_up(value: float) -> int:
    """Python's ``round`` rounds halves to even, which would shift windows of odd and even
    coordinates in opposite directions."""
    return math.floor(value + 0.5)


def _cut(
    image: np.ndarray,
    cells: np.ndarray,
    cell_id: int,
    window: tuple[int, int, int],
    mask_others: bool,
) -> np.ndarray:
    """The (side, side, C) window of ``image``, zeros outside the image (and on other cells when
    ``mask_others``)."""
    top, left, side = window
    height, width = cells.shape
    inside_rows = slice(max(top, 0), min(top + side, height))
    inside_cols = slice(max(left, 0), min(left + side, width))
    crop = np.zeros((side, side, image.shape[2]), dtype=np.uint8)
    placed = crop[
        inside_rows.start - top : inside_rows.stop - top,
        inside_cols.start - left : inside_cols.stop - left,
    ]
    if mask_others:
        labels = cells[inside_rows, inside_cols]
        keep = ((labels == 0) | (labels == cell_id)).view(np.uint8)
        pixels = image[inside_rows, inside_cols]
        # OpenCV's masked and: ~10x faster than numpy's boolean indexing over 4 channels
        placed[...] = cv2.bitwise_and(pixels, pixels, mask=keep).reshape(pixels.shape)
    else:
        placed[...] = image[inside_rows, inside_cols]
    return crop


def _resize(crop: np.ndarray, size: int) -> np.ndarray:
    side = crop.shape[0]
    if side == size:
        return crop
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    resized = cv2.resize(crop, (size, size), interpolation=interpolation)
    return resized.reshape(size, size, crop.shape[2])  # cv2 drops a single channel's axis


def _check_crop_inputs(image: np.ndarray, cells: np.ndarray, size: int, margin: float) -> None:
    if image.ndim != 3 or cells.ndim != 2 or image.shape[:2] != cells.shape:
        raise HPAInputError(
            f"cannot crop cells: the image (shape {image.shape}) and the cell labels (shape "
            f"{cells.shape}) must be an (H, W, C) image and an (H, W) label image of one size"
        )
    if image.dtype != np.uint8:
        raise HPAInputError(f"cannot crop cells: the image must be uint8, got {image.dtype}")
    if not np.issubdtype(cells.dtype, np.integer):
        raise HPAInputError(f"cannot crop cells: labels must be integers, got {cells.dtype}")
    if cells.size and cells.min() < 0:
        raise HPAInputError(f"cannot crop cells: negative label {cells.min()} in the cell labels")
    if size < 1 or margin < 0:
        raise HPAInputError(
            f"cannot crop cells: need size >= 1 and margin >= 0, got {size}, {margin}"
        )


# --------------------------------------------------------------------------------------------
# The cache
# --------------------------------------------------------------------------------------------


class CropCache:
    """The cached cell crops of one mask cache at one crop setting: ``ensure`` fills it,
    ``load``, ``load_crop`` and ``index`` read it (module docstring: the files)."""

    def __init__(
        self,
        folder: str | Path,
        masks: MaskCache,
        size: int,
        margin: float = 0.1,
        mask_others: bool = True,
    ) -> None:
        if size < 1 or margin < 0:
            raise HPAInputError(f"crop size must be >= 1 and margin >= 0, got {size}, {margin}")
        self.masks = masks
        self.size = int(size)
        self.margin = float(margin)
        self.mask_others = bool(mask_others)
        self.folder = Path(folder) / self._folder_name()

    def settings(self) -> dict:
        """What the crops depend on; ``settings.json`` holds it and the folder name hashes it.

        The masks are identified by their segmenter key (the mask cache's folder name), not by
        the cache's path: moving a mask cache keeps its crops, other segmenter settings don't.
        """
        return {
            "version": CROP_VERSION,
            "size": self.size,
            "margin": self.margin,
            "mask_others": self.mask_others,
            "masks": self.masks.folder.name,
        }

    def _folder_name(self) -> str:
        encoded = json.dumps(self.settings(), sort_keys=True).encode()
        digest = hashlib.sha256(encoded).hexdigest()[:12]
        return f"{self.masks.segmenter.name}-s{self.size}-{digest}"

    def crops_path(self, sample_id: str) -> Path:
        return self.folder / f"{sample_id}_crops.npy"

    def ids_path(self, sample_id: str) -> Path:
        return self.folder / f"{sample_id}_cell_ids.npy"

    def has(self, sample_id: str) -> bool:
        return self.ids_path(sample_id).is_file() and self.crops_path(sample_id).is_file()

    # ---- filling ---------------------------------------------------------------------------

    def ensure(self, image_dir: str | Path, ids: Sequence[str], processes: int = 1) -> list[str]:
        """Segment what the mask cache lacks, then crop the images not cached yet; the ids
        cropped now. ``processes`` > 1 crops in that many worker processes."""
        ids = [str(sample_id) for sample_id in ids]
        self.masks.ensure_masks(image_dir, ids, processes=processes)
        write_json(self.folder / "settings.json", self._description())
        missing = [sample_id for sample_id in ids if not self.has(sample_id)]
        log.info(
            "cell crops in %s: %d of %d cached, cropping %d",
            self.folder,
            len(ids) - len(missing),
            len(ids),
            len(missing),
        )
        if not missing:
            return []
        for_each_image(_crop_and_store, self, str(image_dir), missing, processes, "cropping cells")
        return missing

    def _description(self) -> dict:
        return {
            **self.settings(),
            "masks_folder": str(self.masks.folder),
            "segmenter": {
                "name": self.masks.segmenter.name,
                "settings": self.masks.segmenter.settings(),
            },
        }

    # ---- reading ---------------------------------------------------------------------------

    def load(self, sample_id: str) -> tuple[np.ndarray, np.ndarray]:
        """The cell ids (K,) int32 and crops (K, size, size, 4) uint8 of ``sample_id``."""
        cell_ids = self.load_cell_ids(sample_id)
        crops = self._read_npy(self.crops_path(sample_id), sample_id)
        if crops.shape != (len(cell_ids), *self._crop_shape()) or crops.dtype != np.uint8:
            raise self._corrupt(
                self.crops_path(sample_id),
                f"holds {crops.dtype} {crops.shape}, expected uint8 "
                f"{(len(cell_ids), *self._crop_shape())}",
            )
        return cell_ids, crops

    def load_cell_ids(self, sample_id: str) -> np.ndarray:
        """The cell ids (K,) int32 of ``sample_id``, without reading its crops."""
        path = self.ids_path(sample_id)
        cell_ids = self._read_npy(path, sample_id)
        if cell_ids.ndim != 1 or cell_ids.dtype != np.int32:
            raise self._corrupt(
                path, f"holds {cell_ids.dtype} {cell_ids.shape}, expected int32 (K,)"
            )
        return cell_ids

    def load_crop(self, sample_id: str, position: int) -> np.ndarray:
        """The (size, size, 4) uint8 crop at ``position`` (0..K-1) of ``sample_id``.

        Reads the file's header and that crop's bytes only: the cheap read of a Dataset item.
        """
        path = self.crops_path(sample_id)
        try:
            with open(path, "rb") as file:
                count, data_start = self._crops_header(file, path)
                if not 0 <= position < count:
                    raise IndexError(
                        f"{sample_id!r} has {count} cell crops, no position {position}"
                    )
                crop = np.empty(self._crop_shape(), dtype=np.uint8)
                file.seek(data_start + position * crop.nbytes)
                read = file.readinto(memoryview(crop).cast("B"))
        except FileNotFoundError:
            raise self._not_cached(sample_id, path) from None
        except (OSError, ValueError) as error:
            raise self._corrupt(path, f"cannot be read ({error})") from error
        if read != crop.nbytes:
            raise self._corrupt(path, "is truncated")
        return crop

    def _crops_header(self, file, path: Path) -> tuple[int, int]:
        """(number of crops, offset of the first) from a crops file's header, checked."""
        version = np.lib.format.read_magic(file)
        if version not in _HEADER_READERS:
            raise self._corrupt(path, f"has an unknown .npy format version {version}")
        shape, fortran_order, dtype = _HEADER_READERS[version](file)
        if len(shape) != 4 or tuple(shape[1:]) != self._crop_shape() or dtype != np.uint8:
            expected = ", ".join(str(length) for length in self._crop_shape())
            raise self._corrupt(path, f"holds {dtype} {shape}, expected uint8 (K, {expected})")
        if fortran_order:
            raise self._corrupt(path, "is in Fortran order")
        return shape[0], file.tell()

    def index(self, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(image_rows, cell_ids), each (N,): every cell of the images ``ids`` (all cached), as
        the row of its image in ``ids`` (int64) and its cell id (int32), image by image in the
        order of ``ids`` and, within an image, in the order of its crops (``crop_positions``
        gives each one's position). Images without cells contribute nothing."""
        per_image = [self.load_cell_ids(str(sample_id)) for sample_id in ids]
        counts = [len(cell_ids) for cell_ids in per_image]
        image_rows = np.repeat(np.arange(len(per_image), dtype=np.int64), counts)
        cell_ids = np.concatenate([np.zeros(0, np.int32), *per_image])
        return image_rows, cell_ids

    def _crop_shape(self) -> tuple[int, int, int]:
        return (self.size, self.size, CROP_CHANNELS)

    def _read_npy(self, path: Path, sample_id: str) -> np.ndarray:
        try:
            return np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise self._not_cached(sample_id, path) from None
        except (OSError, ValueError, EOFError) as error:
            raise self._corrupt(path, f"cannot be read ({error})") from error

    def _not_cached(self, sample_id: str, path: Path) -> HPAInputError:
        return HPAInputError(f"no cell crops for sample {sample_id!r} at {path}: run ensure first")

    def _corrupt(self, path: Path, problem: str) -> HPAInputError:
        return HPAInputError(
            f"cell crop file {path} {problem}; delete it and run ensure to crop the image again"
        )


def crop_positions(image_rows: np.ndarray) -> np.ndarray:
    """Each entry's position among its image's crops (what ``load_crop`` takes), for the
    ``image_rows`` of ``CropCache.index`` (rows grouped, one image's cells in crop order)."""
    image_rows = np.asarray(image_rows)
    if len(image_rows) == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, image_rows[1:] != image_rows[:-1]])
    lengths = np.diff(np.r_[starts, len(image_rows)])
    return np.arange(len(image_rows)) - np.repeat(starts, lengths)


# --------------------------------------------------------------------------------------------
# Cropping one image (in this process or a pool worker)
# --------------------------------------------------------------------------------------------


def _crop_and_store(cache: CropCache, image_dir: str, sample_id: str) -> None:
    """Crop one sample and write its ids file, then its crops file (the one ``has`` completes)."""
    image = np.moveaxis(read_sample(image_dir, sample_id), 0, -1)  # (4, H, W) -> (H, W, 4)
    cells = cache.masks.load(sample_id)
    try:
        cell_ids, crops = crop_cells(
            image, cells, cache.size, margin=cache.margin, mask_others=cache.mask_others
        )
    except HPAInputError as error:
        raise HPAInputError(
            f"sample {sample_id!r} in {image_dir} with its mask {cache.masks.path(sample_id)}: "
            f"{error}"
        ) from error
    _save_npy(cache.ids_path(sample_id), cell_ids)
    _save_npy(cache.crops_path(sample_id), crops)


def _save_npy(path: Path, array: np.ndarray) -> None:
    """``array`` as a .npy file at ``path``, atomically. Saved through an open file: given a path
    that does not end in .npy (the temporary name), np.save would append the suffix."""

    def save(temporary: Path) -> None:
        with open(temporary, "wb") as file:
            np.save(file, array, allow_pickle=False)

    write_atomic(path, save)
