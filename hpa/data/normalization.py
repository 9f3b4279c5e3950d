"""The normalisation step of a data module: the per-channel (RGBY) mean and std, on the 0..1
pixel scale, that the model normalises its uint8 input with (stored in its checkpoint).

Given in the config (``data.normalize.mean`` and ``.std``), or computed on a seeded random
subset of the train split.
"""

from __future__ import annotations

import logging

import numpy as np

from hpa.core.errors import HPAInputError
from hpa.data.config import NormalizeConfig
from hpa.data.dataset import RGBYDataset

log = logging.getLogger(__name__)


def channel_statistics(
    config: NormalizeConfig, train_set: RGBYDataset, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std), 4 float32 each: the config's when it gives both, else those of
    ``config.num_images`` images of ``train_set`` drawn with ``seed``."""
    if config.mean is not None and config.std is not None:
        mean = np.asarray(config.mean, dtype=np.float32)
        std = np.asarray(config.std, dtype=np.float32)
    else:
        mean, std = train_channel_statistics(train_set, config.num_images, seed)
    if mean.shape != (4,) or std.shape != (4,):
        raise HPAInputError("data.normalize.mean and .std need 4 values each (R, G, B, Y)")
    if np.any(std <= 0):
        raise HPAInputError(f"data.normalize.std must be positive, got {std}")
    log.info(
        "channel mean %s, std %s (RGBY, 0..1 scale)",
        np.round(mean, 4).tolist(),
        np.round(std, 4).tolist(),
    )
    return mean, std


def train_channel_statistics(
    train_set: RGBYDataset, num_images: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of each channel over a seeded random subset of ``train_set`` (unaugmented,
    uncropped images)."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(train_set), size=min(num_images, len(train_set)), replace=False)
    total = np.zeros(4, dtype=np.float64)
    total_squares = np.zeros(4, dtype=np.float64)
    for index in chosen:
        image = train_set.read_image(index)
        pixels = image.reshape(4, -1).astype(np.float64) / 255.0
        total += pixels.mean(axis=1)
        total_squares += (pixels**2).mean(axis=1)
    mean = total / len(chosen)
    std = np.sqrt(np.maximum(total_squares / len(chosen) - mean**2, 1e-12))
    return mean.astype(np.float32), std.astype(np.float32)
