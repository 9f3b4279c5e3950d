"""The four stains of one sample at their native resolution and bit depth, as float 0..1.

Segmentation needs what ``hpa.data.reader`` deliberately drops: the reader converts to 8 bits and
resizes for training, while a segmenter works on the full-size image (the masks are scored at that
size) and gains from the 16-bit release's extra levels in dim cell bodies. This module reads a
sample with ``cv2.IMREAD_UNCHANGED`` and scales each channel to 0..1 by its bit depth.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np

from hpa.core.errors import HPAInputError
from hpa.core.labels import CHANNELS
from hpa.data.reader import find_channel_file

_FULL_SCALE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


def read_native_channel(path: str | Path) -> np.ndarray:
    """One channel file as a float32 H x W array in 0..1, at its own size.

    8-bit files are divided by 255, 16-bit ones by 65535, float files are clipped to 0..1. A
    colour file (HPA's tinted downloads) is reduced to its brightest plane at each pixel, which
    holds the stain whatever its tint (yellow is red plus green).
    """
    path = Path(path)
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise HPAInputError(f"cannot decode {path}: not an image, or a truncated file")
    if image.ndim == 3:
        image = image[..., :3].max(axis=2)  # drop an alpha plane, keep the tinted stain
    return _to_unit_float(image, path)


def read_native_sample(image_dir: str | Path, sample_id: str) -> np.ndarray:
    """The four channels of one sample as a float32 (4, H, W) array in RGBY order (CHANNELS)."""
    paths = [find_channel_file(image_dir, sample_id, color) for color in CHANNELS]
    planes = [read_native_channel(path) for path in paths]
    shapes = {plane.shape for plane in planes}
    if len(shapes) > 1:
        described = ", ".join(
            f"{path.name} {plane.shape[1]}x{plane.shape[0]}"
            for path, plane in zip(paths, planes, strict=True)
        )
        raise HPAInputError(
            f"sample {sample_id!r} in {image_dir}: channel images differ in size ({described})"
        )
    return np.stack(planes)


def as_channel_stack(image: np.ndarray | Mapping[str, np.ndarray]) -> np.ndarray:
    """A segmenter's input as a float32 (4, H, W) RGBY array in 0..1.

    Accepts a (4, H, W) array in RGBY order or a mapping ``{red, green, blue, yellow}`` of H x W
    arrays; uint8 and uint16 are scaled by their full range, floats are taken as 0..1.
    """
    if isinstance(image, Mapping):
        missing = [color for color in CHANNELS if color not in image]
        if missing:
            raise HPAInputError(f"segmentation input lacks the channel(s) {', '.join(missing)}")
        planes = [np.asarray(image[color]) for color in CHANNELS]
        if len({plane.shape for plane in planes}) > 1:
            shapes = ", ".join(f"{c} {p.shape}" for c, p in zip(CHANNELS, planes, strict=True))
            raise HPAInputError(f"segmentation input channels differ in shape ({shapes})")
        image = np.stack(planes)
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[0] != len(CHANNELS):
        raise HPAInputError(
            f"segmentation input must be a (4, H, W) RGBY array, got shape {image.shape}"
        )
    return _to_unit_float(image, "segmentation input")


def _to_unit_float(image: np.ndarray, source: str | Path) -> np.ndarray:
    if image.dtype in _FULL_SCALE:
        return image.astype(np.float32) / np.float32(_FULL_SCALE[image.dtype])
    if np.issubdtype(image.dtype, np.floating):
        image = image.astype(np.float32, copy=False)
        if np.isfinite(image).all() and image.min() >= 0 and image.max() <= 1:
            return image  # already 0..1 (read_native_sample's output): no copy
        return np.clip(np.nan_to_num(image), 0.0, 1.0)
    raise HPAInputError(f"{source}: unsupported pixel type {image.dtype} (8-bit, 16-bit or float)")
