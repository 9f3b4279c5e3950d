"""4-channel uint8 samples built from the real competition channel PNGs (shared fixture folder).

The 48 PNGs come from 48 different samples (12 per colour), so a sample stacked from them mixes
cells: real image statistics for numerical checks, not a labelled sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hpa.core.labels import CHANNELS
from hpa.data.reader import read_channel


def real_rgby_samples(real_channels_dir: Path, count: int, size: int) -> np.ndarray:
    """uint8 (count, 4, size, size): sample i stacks the i-th PNG of each colour, resized."""
    files = {color: sorted(real_channels_dir.glob(f"*_{color}.png")) for color in CHANNELS}
    available = min(len(paths) for paths in files.values())
    assert count <= available, f"only {available} real samples in {real_channels_dir}"
    return np.stack(
        [
            np.stack([read_channel(files[color][index], size) for color in CHANNELS])
            for index in range(count)
        ]
    )
