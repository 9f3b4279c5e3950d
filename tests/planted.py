"""Data sets with planted near-duplicates: degraded copies of samples under new ids."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from hpa.core.labels import CHANNELS
from hpa.data.reader import find_channel_file


def degraded(
    channel: np.ndarray, scale: float = 0.6, gain: float = 1.3, offset: int = 10
) -> np.ndarray:
    """A rescaled and brightened (clipped) copy of a uint8 channel."""
    height, width = channel.shape
    size = (max(8, round(width * scale)), max(8, round(height * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(channel, size, interpolation=interpolation).astype(np.float32)
    return np.clip(resized * gain + offset, 0, 255).astype(np.uint8)


def write_channel(path: Path, channel: np.ndarray, jpeg_quality: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if jpeg_quality is None:
        assert cv2.imwrite(str(path.with_suffix(".png")), channel)
    else:
        parameters = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality]
        assert cv2.imwrite(str(path.with_suffix(".jpg")), channel, parameters)


def write_degraded_copy(
    source_dir: Path,
    source_id: str,
    target_dir: Path,
    target_id: str,
    scale: float = 0.6,
    gain: float = 1.3,
    offset: int = 10,
    jpeg_quality: int | None = 60,
) -> None:
    """Rescaled, brightened and JPEG-compressed (``jpeg_quality``; None: PNG) copies of the four
    channel files of a sample."""
    for color in CHANNELS:
        channel = cv2.imread(str(find_channel_file(source_dir, source_id, color)), 0)
        copy = degraded(channel, scale, gain, offset)
        write_channel(target_dir / f"{target_id}_{color}", copy, jpeg_quality)


def append_rows(csv_path: Path, rows: dict[str, str]) -> None:
    """Add ``Id,Target`` rows to a (new or existing) csv."""
    table = pd.read_csv(csv_path, dtype=str) if csv_path.is_file() else None
    added = pd.DataFrame({"Id": list(rows), "Target": list(rows.values())})
    table = added if table is None else pd.concat([table, added], ignore_index=True)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(csv_path, index=False)
