"""Read the Kaggle HPA layout on disk into uint8 arrays.

Layout::

    ROOT/train.csv                              Id,Target
    ROOT/train/{Id}_{red,green,blue,yellow}.png (or .jpg .jpeg .tif .tiff)
    ROOT/test/{Id}_{color}.png                  test images, ids from sample_submission.csv

Every channel file is one grayscale image. Decoding uses OpenCV (faster than PIL for PNG).
Bad input raises HPAInputError naming the file, or the csv file and its 1-based line number
(the header is line 1).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from hpa.errors import HPAInputError
from hpa.labels import CHANNELS, NUM_CLASSES, parse_target

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
"""Channel file extensions, in the order they are tried."""

_MAX_LISTED = 5
"""How many offending files / ids an error message lists before giving the count."""


# --------------------------------------------------------------------------------------------
# Channel images
# --------------------------------------------------------------------------------------------


def channel_file_name(sample_id: str, color: str, extension: str = ".png") -> str:
    return f"{sample_id}_{color}{extension}"


def find_channel_file(image_dir: str | Path, sample_id: str, color: str) -> Path:
    """The file of one channel of one sample: the first of IMAGE_EXTENSIONS that exists."""
    _check_color(color)
    image_dir = Path(image_dir)
    for extension in IMAGE_EXTENSIONS:
        candidate = image_dir / channel_file_name(sample_id, color, extension)
        if candidate.is_file():
            return candidate
    expected = image_dir / channel_file_name(sample_id, color)
    other_extensions = ", ".join(IMAGE_EXTENSIONS[1:])
    raise HPAInputError(
        f"missing channel file {expected} (also looked for {other_extensions}) "
        f"for sample {sample_id!r}, channel {color!r}"
    )


def read_channel(path: str | Path, size: int | None = None) -> np.ndarray:
    """Decode one grayscale channel file into a uint8 H x W array (S x S when ``size`` is given).

    Conversions to 8 bits:
      - 16-bit: rounded ``value / 257``, the exact inverse of the usual 8 -> 16 bit expansion
        (``v * 257``); 0 -> 0, 65535 -> 255, and within 1 of ``value >> 8``.
      - float: non-finite values become 0, negatives 0; values in [0, 1] map to 0..255,
        otherwise the image's maximum maps to 255.
    A colour (3- or 4-plane) file is accepted when its colour planes are all equal, or when
    exactly one plane is non-zero (HPA colour-codes channel files, e.g. green on black);
    an alpha plane is ignored. Any other colour image is refused.
    Resizing uses INTER_AREA when shrinking and INTER_LINEAR when growing.
    """
    path = Path(path)
    image = _decode(path)
    image = _to_grayscale(image, path)
    image = _to_uint8(image, path)
    if size is not None:
        image = _resize_square(image, size)
    return image


def read_sample(image_dir: str | Path, sample_id: str, size: int | None = None) -> np.ndarray:
    """The four channels of one sample as a uint8 (4, H, W) array in RGBY order (CHANNELS)."""
    image_dir = Path(image_dir)
    planes = []
    for color in CHANNELS:
        path = find_channel_file(image_dir, sample_id, color)
        planes.append(read_channel(path, size))
    shapes = [plane.shape for plane in planes]
    if len(set(shapes)) > 1:
        described = ", ".join(
            f"{color} {h}x{w}" for color, (h, w) in zip(CHANNELS, shapes, strict=True)
        )
        raise HPAInputError(
            f"sample {sample_id!r} in {image_dir}: channel images differ in size ({described}); "
            "give an image size to resize them all"
        )
    return np.stack(planes)


def _check_color(color: str) -> None:
    if color not in CHANNELS:
        raise ValueError(f"unknown channel colour {color!r}; expected one of {CHANNELS}")


def _decode(path: Path) -> np.ndarray:
    # np.fromfile + imdecode (not imread) tells an unreadable file from an undecodable one.
    try:
        encoded = np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise HPAInputError(f"cannot read {path}: {error.strerror or error}") from None
    if encoded.size == 0:
        raise HPAInputError(f"cannot decode {path}: the file is empty")
    image = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise HPAInputError(
            f"cannot decode {path}: not a readable {'/'.join(IMAGE_EXTENSIONS)} image "
            "(truncated or corrupt?)"
        )
    return image


def _to_grayscale(image: np.ndarray, path: Path) -> np.ndarray:
    if image.ndim == 2:
        return image
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise HPAInputError(f"cannot use {path}: unexpected image shape {image.shape}")
    if image.shape[2] == 1:
        return image[:, :, 0]
    colour_planes = [image[:, :, i] for i in range(3)]  # BGR; a 4th plane is alpha
    if all(np.array_equal(colour_planes[0], plane) for plane in colour_planes[1:]):
        return np.ascontiguousarray(colour_planes[0])
    non_zero_planes = [plane for plane in colour_planes if plane.any()]
    if len(non_zero_planes) == 1:
        return np.ascontiguousarray(non_zero_planes[0])
    raise HPAInputError(
        f"cannot use {path}: a grayscale channel image is expected, but it is a colour image "
        "whose colour planes differ and more than one of them is non-zero"
    )


def _to_uint8(image: np.ndarray, path: Path) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if np.issubdtype(image.dtype, np.floating):
        values = np.nan_to_num(image.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        peak = float(values.max()) if values.size else 0.0
        scale = 255.0 if peak <= 1.0 else 255.0 / peak
        return np.rint(np.clip(values * scale, 0.0, 255.0)).astype(np.uint8)
    raise HPAInputError(
        f"cannot use {path}: unsupported pixel type {image.dtype} (expected 8- or 16-bit "
        "unsigned integers or floats)"
    )


def _resize_square(image: np.ndarray, size: int) -> np.ndarray:
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size <= 0:
        raise ValueError(f"image size must be a positive integer, got {size!r}")
    height, width = image.shape
    if height == size and width == size:
        return image
    shrinking = height >= size and width >= size
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (int(size), int(size)), interpolation=interpolation)


# --------------------------------------------------------------------------------------------
# CSV files
# --------------------------------------------------------------------------------------------


def read_csv_table(csv_path: str | Path, required_columns: Sequence[str]) -> pd.DataFrame:
    """Read a csv as strings; the index holds each row's 1-based line number (header = 1).

    Blank lines are dropped but counted, so line numbers match what an editor shows.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise HPAInputError(f"{csv_path}: file not found")
    try:
        table = pd.read_csv(
            csv_path,
            dtype=str,
            keep_default_na=False,
            skip_blank_lines=False,
            encoding="utf-8-sig",
        )
    except pd.errors.EmptyDataError:
        expected = ",".join(required_columns)
        raise HPAInputError(
            f"{csv_path}: the file is empty; expected a header {expected!r}"
        ) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise HPAInputError(f"{csv_path}: not a readable csv file: {error}") from None
    table.columns = [str(column).strip() for column in table.columns]
    missing_columns = [column for column in required_columns if column not in table.columns]
    if missing_columns:
        raise HPAInputError(
            f"{csv_path}, line 1: missing column(s) {', '.join(missing_columns)}; "
            f"the header has {', '.join(table.columns)}"
        )
    table.index = np.arange(len(table)) + 2
    is_blank = (table == "").all(axis=1)
    return table[~is_blank]


def read_labels_csv(csv_path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a Kaggle ``Id,Target`` csv into (ids as a str array, N x 28 uint8 multi-hot labels)."""
    csv_path = Path(csv_path)
    table = read_csv_table(csv_path, ("Id", "Target"))
    ids = _checked_ids(table, csv_path)
    labels = np.zeros((len(ids), NUM_CLASSES), dtype=np.uint8)
    for row, (line, target) in enumerate(zip(table.index, table["Target"], strict=True)):
        try:
            labels[row] = parse_target(target)
        except ValueError as error:
            raise HPAInputError(f"{csv_path}, line {line}: {error}") from None
    logger.debug("read %d labelled ids from %s", len(ids), csv_path)
    return ids, labels


def read_ids_csv(csv_path: str | Path) -> np.ndarray:
    """Read the ``Id`` column of a csv such as sample_submission.csv into a str array."""
    csv_path = Path(csv_path)
    table = read_csv_table(csv_path, ("Id",))
    ids = _checked_ids(table, csv_path)
    logger.debug("read %d ids from %s", len(ids), csv_path)
    return ids


def _checked_ids(table: pd.DataFrame, csv_path: Path) -> np.ndarray:
    """The Id column as a str array; every Id non-empty, a plain file-name stem and unique."""
    if table.empty:
        raise HPAInputError(f"{csv_path}: the file has a header but no rows")
    ids = [str(sample_id).strip() for sample_id in table["Id"]]
    first_line_of: dict[str, int] = {}
    duplicate_lines: list[tuple[str, int, int]] = []
    for line, sample_id in zip(table.index.tolist(), ids, strict=True):
        if not sample_id:
            raise HPAInputError(f"{csv_path}, line {line}: empty Id")
        if "/" in sample_id or "\\" in sample_id:
            raise HPAInputError(
                f"{csv_path}, line {line}: Id {sample_id!r} contains a path separator"
            )
        if sample_id in first_line_of:
            duplicate_lines.append((sample_id, first_line_of[sample_id], line))
        else:
            first_line_of[sample_id] = line
    if duplicate_lines:
        sample_id, first_line, repeat_line = duplicate_lines[0]
        raise HPAInputError(
            f"{csv_path}, lines {first_line} and {repeat_line}: duplicate Id {sample_id!r} "
            f"({len(duplicate_lines)} repeated row(s) in all)"
        )
    return np.asarray(ids, dtype=str)


def _first_few(items: Sequence[str]) -> str:
    listed = ", ".join(items[:_MAX_LISTED])
    return listed + (", ..." if len(items) > _MAX_LISTED else "")
