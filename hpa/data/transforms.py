"""Albumentations pipelines built from config.

Augmentations work on H x W x 4 uint8 arrays (albumentations' layout); datasets hold C x H x W.
Normalisation is not done here: the model normalises its uint8 input with the channel statistics
stored in its checkpoint, so a checkpoint carries everything needed to predict.
"""

from __future__ import annotations

from collections.abc import Mapping

import albumentations as A
import cv2
import numpy as np
from hydra.utils import instantiate


def build_augmentation(steps: Mapping[str, Mapping] | None) -> A.Compose | None:
    """Compose the named albumentations steps of a config (``conf/augment/*.yaml``), in order.

    Each step is a mapping with a ``_target_`` (an albumentations transform) and its arguments;
    a step set to null is skipped. Returns None when there is nothing to apply.
    """
    transforms = [instantiate(dict(step)) for step in (steps or {}).values() if step is not None]
    if not transforms:
        return None
    return A.Compose(transforms)


def apply_augmentation(augmentation: A.Compose | None, image: np.ndarray) -> np.ndarray:
    """Augment a C x H x W uint8 image; returns a C-contiguous C x H x W uint8 array."""
    if augmentation is None:
        return image
    # cv2.merge interleaves the planes about 15x faster than numpy's strided copy of a transpose
    augmented = augmentation(image=cv2.merge(list(image)))["image"]
    return np.ascontiguousarray(augmented.transpose(2, 0, 1))
