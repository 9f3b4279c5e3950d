"""A synthetic cell set on disk in the 2021 Kaggle layout, written atomically, reused when it matches.

Layout under ROOT (Kaggle's 2021 files, plus the cell truth kept apart from what a model reads)::

    ROOT/train.csv                        ID,Label (class ids joined by "|", ascending)
    ROOT/train/{ID}_{red,green,blue,yellow}.png     8-bit grayscale
    ROOT/test/{ID}_{color}.png            only when num_test > 0
    ROOT/sample_submission.csv            ID,ImageWidth,ImageHeight,PredictionString (empty);
                                          only when num_test > 0
    ROOT/cell_truth/{ID}_cells.png        uint16 label image: 0 background, cells 1..K
    ROOT/cell_truth/cells.csv             ID,cell_id,Label: each cell's own classes, train and
                                          test images alike
    ROOT/cell_set.json                    the settings; written last, its presence marks ROOT

The set is written into a sibling ``ROOT.tmp-PID`` folder and renamed to ROOT only when complete
(as hpa.data.synthetic.writer does for the 2018 sets), so an interrupted or killed generation
never leaves a half-written ROOT. Each image is drawn from its own generator seeded by
(seed, split, index): equal settings give byte-identical files, whatever the order.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from hpa.core.errors import HPAInputError
from hpa.core.io import move_folder_into_place
from hpa.core.labels import CHANNELS, HPA2021
from hpa.data.synthetic.cells.assignment import format_label
from hpa.data.synthetic.cells.render import CellImage, render_cell_image
from hpa.data.synthetic.cells.settings import (
    DEFAULT_NEGATIVE_FRACTION,
    DEFAULT_SIZES,
    FORMAT_VERSION,
    CellSetSettings,
)

logger = logging.getLogger(__name__)

MANIFEST_NAME = "cell_set.json"
TRUTH_DIR = "cell_truth"
CELLS_CSV = "cells.csv"
TRAIN_CSV = "train.csv"
SUBMISSION_CSV = "sample_submission.csv"

_SPLITS = {"train": 0, "test": 1}
"""Split folder name -> the split's number in each image's seed."""

# Noisy channels barely compress: Huffman-only coding is both the fastest and the smallest.
_CHANNEL_PNG_PARAMS = [
    cv2.IMWRITE_PNG_COMPRESSION,
    1,
    cv2.IMWRITE_PNG_STRATEGY,
    cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY,
]
_MASK_PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1]


@dataclass(frozen=True)
class _Written:
    """What the csvs say about one written image."""

    image_id: str
    size: int
    label: str
    cell_labels: tuple[str, ...]  # cell k + 1's classes, "|"-joined


def _image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, _SPLITS[split], index]))


def _imwrite(path: Path, image: np.ndarray, params: list[int]) -> None:
    if not cv2.imwrite(str(path), image, params):
        raise OSError(f"could not write {path}")


def _write_image(work_dir: Path, split: str, image_id: str, image: CellImage) -> None:
    for color, plane in zip(CHANNELS, image.channels, strict=True):
        _imwrite(work_dir / split / f"{image_id}_{color}.png", plane, _CHANNEL_PNG_PARAMS)
    _imwrite(work_dir / TRUTH_DIR / f"{image_id}_cells.png", image.cell_labels, _MASK_PNG_PARAMS)


def _write_split(
    work_dir: Path, split: str, count: int, settings: CellSetSettings, bar: tqdm
) -> list[_Written]:
    """Render and write ``count`` images of ``split``; their csv rows in index order."""
    (work_dir / split).mkdir()
    written = []
    for index in range(count):
        rng = _image_rng(settings.seed, split, index)
        image_id = str(uuid.UUID(bytes=rng.bytes(16)))
        size = int(rng.choice(settings.sizes))
        image = render_cell_image(size, settings.negative_fraction, rng)
        _write_image(work_dir, split, image_id, image)
        cell_labels = tuple(format_label(classes) for classes in image.cell_classes)
        written.append(_Written(image_id, size, format_label(image.label), cell_labels))
        bar.update(1)
    return written


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _write_tables(work_dir: Path, train: list[_Written], test: list[_Written]) -> None:
    _write_csv(
        work_dir / TRAIN_CSV,
        (HPA2021.id_column, HPA2021.column),
        [(image.image_id, image.label) for image in train],
    )
    if test:
        _write_csv(
            work_dir / SUBMISSION_CSV,
            (HPA2021.id_column, "ImageWidth", "ImageHeight", "PredictionString"),
            [(image.image_id, image.size, image.size, "") for image in test],
        )
    _write_csv(
        work_dir / TRUTH_DIR / CELLS_CSV,
        (HPA2021.id_column, "cell_id", HPA2021.column),
        [
            (image.image_id, cell_id, label)
            for image in train + test
            for cell_id, label in enumerate(image.cell_labels, start=1)
        ],
    )


def read_manifest(root: str | Path) -> dict | None:
    """The manifest of the cell set in ``root``, or None when there is none readable."""
    try:
        manifest = json.loads((Path(root) / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _listed_ids(path: Path) -> list[str] | None:
    try:
        with path.open(newline="") as handle:
            return [row[HPA2021.id_column] for row in csv.DictReader(handle)]
    except (OSError, KeyError, csv.Error):
        return None


def is_complete(root: str | Path) -> bool:
    """True when ``root`` holds a finished cell set: a manifest of this FORMAT_VERSION, its csvs,
    and every image and cell mask they list."""
    root = Path(root)
    manifest = read_manifest(root)
    if manifest is None or manifest.get("format_version") != FORMAT_VERSION:
        return False
    if not (root / TRUTH_DIR / CELLS_CSV).is_file():
        return False
    splits = {"train": _listed_ids(root / TRAIN_CSV)}
    if manifest.get("num_test"):
        splits["test"] = _listed_ids(root / SUBMISSION_CSV)
    for split, ids in splits.items():
        if ids is None or len(ids) != manifest.get(f"num_{split}"):
            return False
        for image_id in ids:
            paths = [root / split / f"{image_id}_{color}.png" for color in CHANNELS]
            paths.append(root / TRUTH_DIR / f"{image_id}_cells.png")
            if not all(path.is_file() for path in paths):
                return False
    return True


def _check_replaceable(root: Path) -> None:
    """Refuse to overwrite anything but an empty directory or a cell set."""
    if not root.exists() and not root.is_symlink():
        return
    if not root.is_dir():
        raise HPAInputError(f"{root} exists and is not a directory; refusing to replace it")
    if (root / MANIFEST_NAME).is_file() or not any(root.iterdir()):
        return
    raise HPAInputError(
        f"{root} is a non-empty directory without {MANIFEST_NAME}, so it may hold real data or "
        "another kind of set; refusing to overwrite it with a synthetic cell set. Choose another "
        "directory or delete it."
    )


def _move_into_place(work_dir: Path, root: Path, manifest: dict) -> None:
    _check_replaceable(root)
    move_folder_into_place(
        work_dir, root, lambda: is_complete(root) and read_manifest(root) == manifest
    )


def generate_cell_set(
    root: str | Path,
    num_train: int,
    num_test: int = 0,
    sizes: Sequence[int] = DEFAULT_SIZES,
    seed: int = 0,
    negative_fraction: float = DEFAULT_NEGATIVE_FRACTION,
    progress: bool = True,
) -> Path:
    """Write a synthetic cell set (see this module's layout) to ``root``, replacing an old one.

    Raises ValueError for bad settings, and HPAInputError when ``root`` is a file or a
    non-empty directory that is not a cell set. Returns ``root`` as an absolute path.
    """
    settings = CellSetSettings(num_train, num_test, sizes, seed, negative_fraction)
    root = Path(os.path.abspath(root))  # normalises "." and "x/" so the sibling name is sane
    _check_replaceable(root)
    work_dir = root.with_name(f"{root.name}.tmp-{os.getpid()}")
    if work_dir.exists():
        shutil.rmtree(work_dir)
    logger.info(
        "generating %d train + %d test synthetic cell images of %s px (seed %d) into %s",
        num_train,
        num_test,
        "/".join(map(str, settings.sizes)),
        seed,
        root,
    )
    try:
        (work_dir / TRUTH_DIR).mkdir(parents=True)
        with tqdm(
            total=num_train + num_test, disable=not progress, unit="img", desc="synthetic cells"
        ) as bar:
            train = _write_split(work_dir, "train", num_train, settings, bar)
            test = _write_split(work_dir, "test", num_test, settings, bar) if num_test else []
        ids = [image.image_id for image in train + test]
        if len(set(ids)) != len(ids):  # 128-bit random ids: never expected
            raise RuntimeError("synthetic image ids collided; try another seed")
        _write_tables(work_dir, train, test)
        manifest = settings.to_manifest()
        (work_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
        _move_into_place(work_dir, root, manifest)
    except BaseException:
        shutil.rmtree(work_dir, ignore_errors=True)
        raise
    logger.info("synthetic cell set ready in %s", root)
    return root


def ensure_cell_set(
    root: str | Path,
    num_train: int,
    num_test: int = 0,
    sizes: Sequence[int] = DEFAULT_SIZES,
    seed: int = 0,
    negative_fraction: float = DEFAULT_NEGATIVE_FRACTION,
    progress: bool = True,
) -> Path:
    """``root`` if it holds a complete cell set with these settings, else (re)generate it there.

    A cell set with other settings, or an incomplete one, is replaced (with a warning); a
    non-empty directory that is not a cell set is refused (HPAInputError) and left untouched.
    """
    settings = CellSetSettings(num_train, num_test, sizes, seed, negative_fraction)
    root = Path(root)
    manifest = read_manifest(root)
    if manifest is not None:
        if manifest == settings.to_manifest() and is_complete(root):
            logger.info("using the existing synthetic cell set in %s", root)
            return root
        reason = "is incomplete" if manifest == settings.to_manifest() else "has other settings"
        logger.warning(
            "the synthetic cell set in %s %s (%s); replacing it with %s",
            root,
            reason,
            manifest,
            settings.to_manifest(),
        )
    return generate_cell_set(
        root, num_train, num_test, settings.sizes, seed, negative_fraction, progress
    )
