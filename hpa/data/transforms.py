"""Albumentations pipelines built from config, the one transform we add to them, and the crops
of ``data.load_size``.

Augmentations work on H x W x 4 uint8 arrays (albumentations' layout), the layout of the cache's
rows and of the batches (hpa.data.dataset), which the models see as channels-last 4 x H x W.
Normalisation is not done here: the model normalises its uint8 input with the channel statistics
stored in its checkpoint, so a checkpoint carries everything needed to predict.

With a ``load_size`` larger than the ``image_size`` the images are read (and cached) at
``load_size``: training takes a random ``image_size`` crop of each, before its augmentation, and
validation, test and prediction the centre crop (bestfitting, 1st in 2018, trained on 512 px
crops of 768 px images).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import albumentations as A
import cv2
import numpy as np
from hydra.utils import instantiate

from hpa.core.errors import HPAInputError


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


def build_augmentation(
    steps: Mapping[str, Mapping] | None, crop: A.BasicTransform | None = None
) -> A.Compose | None:
    """Compose ``crop`` (when given) and the named albumentations steps of a config
    (``conf/augment/*.yaml``), in order.

    Each step is a mapping with a ``_target_`` (an albumentations transform) and its arguments;
    a step set to null is skipped. Returns None when there is nothing to apply.
    """
    transforms = [instantiate(dict(step)) for step in (steps or {}).values() if step is not None]
    if crop is not None:
        transforms.insert(0, crop)
    if not transforms:
        return None
    return A.Compose(transforms)


def train_augmentation(
    steps: Mapping[str, Mapping] | None, image_size: int, load_size: int | None, seed: int
) -> A.Compose | None:
    """The train split's pipeline: the random ``image_size`` crop of images read at
    ``load_size`` (when larger) and the configured ``steps``, seeded with ``seed``
    (albumentations keeps its own random state); None when there is nothing to apply."""
    augmentation = build_augmentation(steps, crop=image_crop(image_size, load_size, random=True))
    if augmentation is not None:
        augmentation.set_random_seed(seed)
    return augmentation


def check_crop_sizes(image_size: int, load_size: int | None) -> None:
    """Refuse a ``load_size`` smaller than the ``image_size`` it is cropped to."""
    if load_size is not None and load_size < image_size:
        raise HPAInputError(
            f"data.load_size={load_size} is smaller than data.image_size={image_size}: images are "
            "read at load_size and cropped to image_size (null: no crop)"
        )


def image_crop(image_size: int, load_size: int | None, random: bool) -> A.BasicTransform | None:
    """The ``image_size`` crop of images read at ``load_size``: a random one (training) or the
    centre one (evaluation); None when there is nothing to crop (no load_size, or the same)."""
    check_crop_sizes(image_size, load_size)
    if load_size is None or load_size == image_size:
        return None
    crop = A.RandomCrop if random else A.CenterCrop
    return crop(height=image_size, width=image_size)


def evaluation_crop(image_size: int, load_size: int | None) -> A.Compose | None:
    """The pipeline of evaluation images read at ``load_size``: their centre crop, or None."""
    return build_augmentation(None, image_crop(image_size, load_size, random=False))


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
