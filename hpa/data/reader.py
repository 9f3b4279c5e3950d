"""Read the Kaggle HPA layout on disk into uint8 arrays.

Layout::

    ROOT/train.csv                              Id,Target (the columns of the run's label set)
    ROOT/train/{Id}_{red,green,blue,yellow}.png (or .jpg .jpeg .tif .tiff)
    ROOT/test/{Id}_{color}.png                  test images, ids from sample_submission.csv

Every channel file is one stain: a grayscale image (the Kaggle files), or a colour image tinted
in its stain's colour as HPA publishes them (see ``stain_plane``). Decoding uses OpenCV (faster
than PIL for PNG). Bad input raises HPAInputError naming the file, or the csv file and its 1-based
line number (the header is line 1).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from hpa.core.errors import HPAInputError
from hpa.core.labels import CHANNELS, LabelSet

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


def read_channel(path: str | Path, size: int | None = None, color: str | None = None) -> np.ndarray:
    """Decode one channel file into a uint8 H x W array (S x S when ``size`` is given).

    ``color`` is the file's stain (red, green, blue or yellow): a colour file is read through that
    stain's own plane(s) (``stain_plane``). Without it, the stain is taken from a Kaggle-style
    name ``{Id}_{color}.{ext}``; a colour file whose stain is unknown is refused unless its colour
    planes are all equal.

    Conversions to 8 bits:
      - 16-bit: rounded ``value / 257``, the exact inverse of the usual 8 -> 16 bit expansion
        (``v * 257``); 0 -> 0, 65535 -> 255, and within 1 of ``value >> 8``.
      - float: non-finite values become 0, negatives 0; values in [0, 1] map to 0..255,
        otherwise the image's maximum maps to 255.
    Resizing uses INTER_AREA when shrinking and INTER_LINEAR when growing.
    """
    path = Path(path)
    if color is None:
        color = _stain_in_name(path)
    return decode_channel(_read_bytes(path), path, size, color)


def decode_channel(
    encoded: np.ndarray | bytes,
    source: str | Path,
    size: int | None = None,
    color: str | None = None,
) -> np.ndarray:
    """``read_channel`` on the bytes of an image file; ``source`` (a path or URL) names it in
    errors."""
    if color is not None:
        _check_color(color)
    if isinstance(encoded, bytes):
        encoded = np.frombuffer(encoded, dtype=np.uint8)
    image = _decode(encoded, source)
    image = stain_plane(image, color, source)
    image = _to_uint8(image, source)
    if size is not None:
        image = _resize_square(image, size)
    return image


def read_sample(image_dir: str | Path, sample_id: str, size: int | None = None) -> np.ndarray:
    """The four channels of one sample as a uint8 (4, H, W) array in RGBY order (CHANNELS)."""
    image_dir = Path(image_dir)
    planes = []
    for color in CHANNELS:
        path = find_channel_file(image_dir, sample_id, color)
        planes.append(read_channel(path, size, color))
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


# --------------------------------------------------------------------------------------------
# Colour (tinted) channel files
# --------------------------------------------------------------------------------------------

STAIN_PLANES: dict[str, tuple[str, ...]] = {
    "red": ("R",),
    "green": ("G",),
    "blue": ("B",),
    "yellow": ("R", "G"),
}
"""The colour planes that carry each stain in HPA's tinted files (yellow is shown as red+green)."""

STAIN_DOMINANCE = 2.0
"""How much brighter (mean) than every other colour plane each of the stain's planes must be."""

BLANK_LEVEL = 1 / 255
"""Below this mean (a fraction of full scale) in every plane a file is black: any plane will do."""

_BGR_INDEX = {"B": 0, "G": 1, "R": 2}  # OpenCV decodes colour images as BGR(A)


def stain_plane(image: np.ndarray, color: str | None, source: str | Path) -> np.ndarray:
    """The single plane of a decoded channel image (H x W, or H x W x C as OpenCV gives it).

    A grayscale image is its own plane; so is a colour image whose colour planes are all equal.
    Otherwise the image is HPA's tinted file of stain ``color``: the stain's plane (red: R,
    green: G, blue: B), or for yellow the rounded mean of R and G. It is refused (naming
    ``source``) unless its signal is in those planes: each of the stain's planes must be at
    least STAIN_DOMINANCE times brighter, on average, than every other colour plane (and for
    yellow, R and G within that factor of each other).
    JPEG's colour noise in the other planes stays below that (at quality 75, at most a third of
    the stain's mean, on the dimmest real green stain); a file tinted in another stain's colour
    is far above it. An image black in every plane (mean below BLANK_LEVEL of full scale) is
    accepted. Any alpha plane is ignored. Never a luminance conversion: that would keep only
    11% of a blue stain's signal and 30% of a red one's.
    """
    if image.ndim == 2:
        return image
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise HPAInputError(f"cannot use {source}: unexpected image shape {image.shape}")
    if image.shape[2] == 1:
        return image[:, :, 0]
    planes = {name: image[:, :, index] for name, index in _BGR_INDEX.items()}
    if np.array_equal(planes["B"], planes["G"]) and np.array_equal(planes["B"], planes["R"]):
        return np.ascontiguousarray(planes["B"])
    if color is None:
        raise HPAInputError(
            f"cannot use {source}: a colour image whose colour planes differ, and its stain is "
            "unknown (name it {Id}_{color}.{ext} or give its colour)"
        )
    _check_color(color)
    _check_signal_in_stain_planes(image, color, source)
    stain = [planes[name] for name in STAIN_PLANES[color]]
    if len(stain) == 1:
        return np.ascontiguousarray(stain[0])
    if np.issubdtype(image.dtype, np.floating):
        return (stain[0] + stain[1]) / 2
    wide = stain[0].astype(np.uint32) + stain[1]
    return ((wide + 1) // 2).astype(image.dtype)


def tint(plane: np.ndarray, color: str) -> np.ndarray:
    """A grayscale stain as HPA publishes it: an H x W x 3 (BGR, as OpenCV writes it) image with
    the stain in its own colour plane(s) and zero elsewhere; ``stain_plane`` undoes it."""
    _check_color(color)
    image = np.zeros((*plane.shape, 3), dtype=plane.dtype)
    for name in STAIN_PLANES[color]:
        image[:, :, _BGR_INDEX[name]] = plane
    return image


def _check_signal_in_stain_planes(image: np.ndarray, color: str, source: str | Path) -> None:
    means = dict(zip("BGR", cv2.mean(image)[:3], strict=False))
    if max(means.values()) < BLANK_LEVEL * _full_scale(image):
        return
    weakest_stain = min(means[name] for name in STAIN_PLANES[color])
    brightest_other = max(mean for name, mean in means.items() if name not in STAIN_PLANES[color])
    above_the_others = weakest_stain >= STAIN_DOMINANCE * brightest_other
    alike = weakest_stain * STAIN_DOMINANCE >= max(means.values())  # yellow's R and G
    if above_the_others and alike:
        return
    described = ", ".join(f"{name} {means[name]:.3g}" for name in "RGB")
    wanted = " and ".join(STAIN_PLANES[color])
    raise HPAInputError(
        f"cannot use {source}: a {color} channel file whose signal is not in the {color} "
        f"stain's colour plane(s) {wanted} (mean of each colour plane: {described}); is it "
        "another stain's file?"
    )


def _full_scale(image: np.ndarray) -> float:
    if np.issubdtype(image.dtype, np.integer):
        return float(np.iinfo(image.dtype).max)
    return max(1.0, float(np.nanmax(image[:, :, :3])))


def _stain_in_name(path: Path) -> str | None:
    """The colour of a Kaggle-style ``{Id}_{color}.{ext}`` name, else None."""
    color = path.stem.rpartition("_")[2]
    return color if color in CHANNELS else None


def _check_color(color: str) -> None:
    if color not in CHANNELS:
        raise ValueError(f"unknown channel colour {color!r}; expected one of {CHANNELS}")


def _read_bytes(path: Path) -> np.ndarray:
    # np.fromfile + imdecode (not imread) tells an unreadable file from an undecodable one.
    try:
        return np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise HPAInputError(f"cannot read {path}: {error.strerror or error}") from None


def _decode(encoded: np.ndarray, source: str | Path) -> np.ndarray:
    if encoded.size == 0:
        raise HPAInputError(f"cannot decode {source}: the file is empty")
    image = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise HPAInputError(
            f"cannot decode {source}: not a readable {'/'.join(IMAGE_EXTENSIONS)} image "
            "(truncated or corrupt?)"
        )
    return image


def _to_uint8(image: np.ndarray, source: str | Path) -> np.ndarray:
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
        f"cannot use {source}: unsupported pixel type {image.dtype} (expected 8- or 16-bit "
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


def read_labels_csv(csv_path: str | Path, label_set: LabelSet) -> tuple[np.ndarray, np.ndarray]:
    """Read a labels csv into (ids as a str array, N x C uint8 multi-hot labels).

    The ids are in ``label_set.id_column``, the labels in ``label_set.column`` (class ids joined
    by ``label_set.separator``). A row whose labels do not parse, a class id outside the label set
    included, is an HPAInputError naming the file and the row's line.
    """
    csv_path = Path(csv_path)
    table = read_csv_table(csv_path, (label_set.id_column, label_set.column))
    ids = _checked_ids(table, csv_path, label_set.id_column)
    labels = np.zeros((len(ids), label_set.num_classes), dtype=np.uint8)
    cells = table[label_set.column]
    for row, (line, cell) in enumerate(zip(table.index, cells, strict=True)):
        try:
            labels[row] = label_set.parse(cell)
        except ValueError as error:
            raise HPAInputError(f"{csv_path}, line {line}: {error}") from None
    logger.debug("read %d labelled ids from %s", len(ids), csv_path)
    return ids, labels


def read_ids_csv(csv_path: str | Path, id_column: str = "Id") -> np.ndarray:
    """Read the id column of a csv such as sample_submission.csv into a str array."""
    csv_path = Path(csv_path)
    table = read_csv_table(csv_path, (id_column,))
    ids = _checked_ids(table, csv_path, id_column)
    logger.debug("read %d ids from %s", len(ids), csv_path)
    return ids


def _checked_ids(table: pd.DataFrame, csv_path: Path, id_column: str) -> np.ndarray:
    """The id column as a str array; every id non-empty, a plain file-name stem and unique."""
    if table.empty:
        raise HPAInputError(f"{csv_path}: the file has a header but no rows")
    ids = [str(sample_id).strip() for sample_id in table[id_column]]
    first_line_of: dict[str, int] = {}
    duplicate_lines: list[tuple[str, int, int]] = []
    for line, sample_id in zip(table.index.tolist(), ids, strict=True):
        if not sample_id:
            raise HPAInputError(f"{csv_path}, line {line}: empty {id_column}")
        if "/" in sample_id or "\\" in sample_id:
            raise HPAInputError(
                f"{csv_path}, line {line}: {id_column} {sample_id!r} contains a path separator"
            )
        if sample_id in first_line_of:
            duplicate_lines.append((sample_id, first_line_of[sample_id], line))
        else:
            first_line_of[sample_id] = line
    if duplicate_lines:
        sample_id, first_line, repeat_line = duplicate_lines[0]
        raise HPAInputError(
            f"{csv_path}, lines {first_line} and {repeat_line}: duplicate {id_column} "
            f"{sample_id!r} ({len(duplicate_lines)} repeated row(s) in all)"
        )
    return np.asarray(ids, dtype=str)


def _first_few(items: Sequence[str]) -> str:
    listed = ", ".join(items[:_MAX_LISTED])
    return listed + (", ..." if len(items) > _MAX_LISTED else "")
