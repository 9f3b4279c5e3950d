"""Albumentations pipelines built from config, and the one transform we add to them.

Augmentations work on H x W x 4 uint8 arrays (albumentations' layout), the layout of the cache's
rows and of the batches (hpa.data.dataset), which the models see as channels-last 4 x H x W.
Normalisation is not done here: the model normalises its uint8 input with the channel statistics
stored in its checkpoint, so a checkpoint carries everything needed to predict.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import albumentations as A
import cv2
import numpy as np
from hydra.utils import instantiate


class D4(A.D4):
    """albumentations' D4 (one of the 8 symmetries of the square, drawn uniformly), applied to
    images with OpenCV. albumentations rotates and transposes with numpy views and then copies
    them into contiguous memory, a strided copy about 15 times slower than ``cv2.rotate`` on a
    4 x 256 x 256 image; the output is the same (tests/test_transforms.py). Masks, boxes and
    keypoints keep albumentations' own code."""

    def apply(self, img: np.ndarray, group_element: str, **params: Any) -> np.ndarray:
        if group_element == "e":
            return img
        if group_element in _ROTATIONS:
            transformed = cv2.rotate(img, _ROTATIONS[group_element])
        elif group_element in _FLIPS:
            transformed = cv2.flip(img, _FLIPS[group_element])
        elif group_element == "t":
            transformed = cv2.transpose(img)
        elif group_element == "hvt":  # reflection over the anti-diagonal
            transformed = cv2.flip(cv2.transpose(img), -1)
        else:
            raise ValueError(f"not an element of D4: {group_element!r}")
        # OpenCV drops the channel axis of a one-channel image
        return transformed.reshape(*transformed.shape[:2], *img.shape[2:])


# albumentations' r90 is numpy's rot90 (counterclockwise); v flips rows, h flips columns
_ROTATIONS = {
    "r90": cv2.ROTATE_90_COUNTERCLOCKWISE,
    "r180": cv2.ROTATE_180,
    "r270": cv2.ROTATE_90_CLOCKWISE,
}
_FLIPS = {"v": 0, "h": 1}


def build_augmentation(steps: Mapping[str, Mapping] | None) -> A.Compose | None:
    """Compose the named albumentations steps of a config (``conf/augment/*.yaml``), in order.

    Each step is a mapping with a ``_target_`` (an albumentations transform) and its arguments;
    a step set to null is skipped. Returns None when there is nothing to apply.
    """
    transforms = [instantiate(dict(step)) for step in (steps or {}).values() if step is not None]
    if not transforms:
        return None
    return A.Compose(transforms)


def interleave_channels(image: np.ndarray) -> np.ndarray:
    """A C x H x W image as a C-contiguous H x W x C array (albumentations' layout).

    ``cv2.merge`` interleaves the planes about 15 times faster than numpy's strided copy of a
    transpose; a view that is already interleaved is returned as it is.
    """
    interleaved = image.transpose(1, 2, 0)
    if interleaved.flags.c_contiguous:
        return interleaved
    merged = cv2.merge(list(image))
    return merged.reshape(interleaved.shape)  # OpenCV drops the axis of a one-channel image
