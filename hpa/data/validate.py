"""Check channel files before a run starts: every problem found, reported at once.

``fast`` (the default) checks that each channel file exists and is not empty, reads its image
header (PIL opens lazily: size and mode without decoding the pixels), checks the file's end for
truncation (PNG's IEND chunk, JPEG's end-of-image marker, TIFF strips inside the file) and
compares the sizes of a sample's four channels. Colour files (such as HPA's tinted jpgs) are
decoded by the reader itself, with their stain, to check that the stain's signal is in its own
colour plane(s) (``hpa.data.reader.stain_plane``). ``full`` decodes every file with the reader.

``on_bad_image=error`` stops with one message listing the first few problems and their count;
``skip`` drops the bad samples with a warning, and the caller writes them to
``skipped_images.csv`` (Id, file, problem) in its run directory.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from hpa.core.errors import HPAInputError
from hpa.core.labels import CHANNELS
from hpa.data.reader import IMAGE_EXTENSIONS, channel_file_name, read_channel

log = logging.getLogger(__name__)

VALIDATION_MODES = ("fast", "full", "none")
BAD_IMAGE_POLICIES = ("error", "skip")

_MAX_LISTED = 5
_PNG_END = b"IEND\xaeB`\x82"
_JPEG_END = b"\xff\xd9"
_GRAYSCALE_MODES = ("1", "L", "I", "F", "I;16", "I;16B", "I;16L", "I;16N", "LA")


class Problem(NamedTuple):
    sample_id: str
    file: str
    problem: str


def check_channel_file(
    path: Path, color: str, full: bool = False
) -> tuple[tuple[int, int] | None, str | None]:
    """(width, height) of the channel file of stain ``color``, or None and the problem with it."""
    try:
        file_size = path.stat().st_size
    except OSError as error:
        return None, f"cannot read: {error.strerror or error}"
    if file_size == 0:
        return None, "the file is empty"
    if full:
        try:
            height, width = read_channel(path, color=color).shape
        except HPAInputError as error:
            return None, _without_path(str(error), path)
        return (width, height), None
    try:
        with Image.open(path) as image:
            size, mode, image_format = image.size, image.mode, image.format
            truncated = _truncated(path, image, file_size)
    except UnidentifiedImageError:
        return None, f"not an image ({'/'.join(IMAGE_EXTENSIONS)} expected)"
    except (OSError, SyntaxError, ValueError) as error:
        return None, f"unreadable image header: {error}"
    if truncated:
        return None, f"truncated {image_format} file (its end marker is missing)"
    if mode not in _GRAYSCALE_MODES:
        # decode colour files to check that the stain's signal is in its own plane(s)
        try:
            read_channel(path, color=color)
        except HPAInputError as error:
            return None, _without_path(str(error), path)
    return size, None


def find_problems(image_dir: str | Path, ids: Sequence[str], mode: str = "fast") -> list[Problem]:
    """Every problem of the channel files of ``ids`` under ``image_dir`` (empty: all good)."""
    check_choice("data.validate", mode, VALIDATION_MODES)
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise HPAInputError(f"image directory {image_dir} does not exist")
    if mode == "none":
        return []
    present = set(os.listdir(image_dir))
    paths: list[list[Path | None]] = []
    for sample_id in ids:
        paths.append([_present_file(image_dir, present, sample_id, color) for color in CHANNELS])
    existing = [
        (path, color)
        for sample_paths in paths
        for path, color in zip(sample_paths, CHANNELS, strict=True)
        if path is not None
    ]
    with ThreadPoolExecutor(max_workers=8) as pool:  # I/O bound, e.g. on network storage
        checked = pool.map(lambda item: check_channel_file(*item, mode == "full"), existing)
        results = dict(zip((path for path, _ in existing), checked, strict=True))
    problems = []
    for sample_id, sample_paths in zip(ids, paths, strict=True):
        sizes = {}
        for color, path in zip(CHANNELS, sample_paths, strict=True):
            if path is None:
                expected = image_dir / channel_file_name(sample_id, color)
                problems.append(Problem(sample_id, str(expected), "missing"))
                continue
            size, problem = results[path]
            if problem:
                problems.append(Problem(sample_id, str(path), problem))
            else:
                sizes[color] = size
        if len(set(sizes.values())) > 1:
            described = ", ".join(f"{color} {w}x{h}" for color, (w, h) in sizes.items())
            problems.append(
                Problem(sample_id, str(image_dir), f"channel images differ in size ({described})")
            )
    return problems


def checked_samples(
    image_dir: str | Path,
    ids: Sequence[str],
    mode: str = "fast",
    on_bad_image: str = "error",
) -> tuple[np.ndarray, pd.DataFrame]:
    """(a boolean mask of the samples to keep, a table of the skipped ones' problems).

    Raises HPAInputError naming the first few problems and their count under ``error``.
    """
    check_choice("data.on_bad_image", on_bad_image, BAD_IMAGE_POLICIES)
    ids = np.asarray(ids, dtype=str)
    problems = find_problems(image_dir, ids, mode)
    table = pd.DataFrame(problems, columns=["Id", "file", "problem"])
    if problems and on_bad_image == "error":
        raise HPAInputError(
            _summary(problems, len(ids)) + "; set data.on_bad_image=skip to drop them"
        )
    keep = ~np.isin(ids, table["Id"].to_numpy(dtype=str))
    if problems:
        log.warning("skipping %s", _summary(problems, len(ids)))
    if not keep.any():
        raise HPAInputError(f"every sample under {image_dir} has a bad channel file")
    return keep, table


def _summary(problems: Sequence[Problem], num_samples: int) -> str:
    num_bad = len({problem.sample_id for problem in problems})
    missing = [p.file for p in problems if p.problem == "missing"]
    parts = []
    if missing:
        listed = ", ".join(missing[:_MAX_LISTED]) + (", ..." if len(missing) > _MAX_LISTED else "")
        parts.append(
            f"{len(missing)} channel file(s) missing (each may be "
            f"{'/'.join(IMAGE_EXTENSIONS)}): {listed}"
        )
    others = [p for p in problems if p.problem != "missing"]
    if others:
        listed = "; ".join(f"{p.file}: {p.problem}" for p in others[:_MAX_LISTED])
        parts.append(
            f"{len(others)} bad channel file(s): {listed}"
            + ("; ..." if len(others) > _MAX_LISTED else "")
        )
    return f"{num_bad} of {num_samples} sample(s) with bad images: " + ". ".join(parts)


def _present_file(image_dir: Path, present: set[str], sample_id: str, color: str) -> Path | None:
    for extension in IMAGE_EXTENSIONS:
        name = channel_file_name(sample_id, color, extension)
        if name in present:
            return image_dir / name
    return None


def missing_end_marker(image_format: str, tail: bytes) -> bool:
    """Whether ``tail``, the last 64 bytes (or more) of a PNG or JPEG file, lacks the format's
    end marker: the file was cut short. Trailing zero bytes (padding) are allowed."""
    tail = tail[-64:].rstrip(b"\x00")
    if image_format == "PNG":
        return not tail.endswith(_PNG_END)
    if image_format == "JPEG":
        return _JPEG_END not in tail
    raise ValueError(f"no end marker known for {image_format!r} (PNG or JPEG)")


def _truncated(path: Path, image: Image.Image, file_size: int) -> bool:
    if image.format in ("PNG", "JPEG"):
        return missing_end_marker(image.format, _tail(path, 64))
    if image.format == "TIFF":
        tags = image.tag_v2
        offsets = tags.get(273) or tags.get(324) or ()
        counts = tags.get(279) or tags.get(325) or ()
        return any(
            offset + count > file_size for offset, count in zip(offsets, counts, strict=False)
        )
    return False


def _tail(path: Path, num_bytes: int) -> bytes:
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        handle.seek(max(0, handle.tell() - num_bytes))
        return handle.read()


def _without_path(message: str, path: Path) -> str:
    """The reader's message without its 'cannot ... PATH:' prefix (the file is listed anyway)."""
    _, separator, rest = message.partition(f"{path}: ")
    return rest if separator else message


def check_choice(key: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise HPAInputError(f"{key}={value!r}: expected one of {', '.join(choices)}")
