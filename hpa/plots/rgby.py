"""Images for people to look at: RGBY samples as RGB composites, with their class names."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from matplotlib import colormaps

from hpa.core.labels import LabelSet

OVERLAY_ALPHA = 0.5
"""The heat map's share of each pixel of ``heat_map_overlay``."""


def rgby_composite(image: np.ndarray) -> np.ndarray:
    """A 4 x H x W RGBY uint8 image as an H x W x 3 uint8 RGB picture.

    The convention of the HPA viewer and the Kaggle kernels: red, green and blue stay where they
    are and yellow (endoplasmic reticulum) is shown as half red plus half green.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[0] != 4:
        raise ValueError(f"expected a 4 x H x W RGBY image, got shape {image.shape}")
    red, green, blue, yellow = image.astype(np.float32)
    rgb = np.stack([red + yellow / 2, green + yellow / 2, blue], axis=-1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def class_names_of(label_set: LabelSet, multi_hot: Iterable) -> str:
    """``[1, 0, ..., 1, 0]`` -> ``"Nucleoplasm, Cytosol"``."""
    return ", ".join(label_set.class_names[i] for i, on in enumerate(multi_hot) if on)


def heat_map_overlay(picture: np.ndarray, heat_map: np.ndarray) -> np.ndarray:
    """An H x W x 3 uint8 ``picture`` blended with an H x W ``heat_map`` in [0, 1] (jet
    colours, ``OVERLAY_ALPHA`` of the heat map)."""
    colours = colormaps["jet"](np.clip(heat_map, 0.0, 1.0))[..., :3] * 255.0
    blended = (1.0 - OVERLAY_ALPHA) * picture.astype(np.float32) + OVERLAY_ALPHA * colours
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)
