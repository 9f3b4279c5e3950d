"""A synthetic set on disk in the Kaggle 2018 layout (label set HPA2018), written atomically,
reused when it matches.

Layout written under ROOT (the same as Kaggle's, plus two files)::

    ROOT/train.csv                          Id,Target
    ROOT/train/{Id}_{red,green,blue,yellow}.png
    ROOT/test/{Id}_{color}.png              only when num_test > 0
    ROOT/sample_submission.csv              Id,Predicted (all 0, as on Kaggle)
    ROOT/test_labels.csv                    Id,Target: the hidden truth of the test images
    ROOT/synthetic.json                     generation parameters; its presence marks ROOT done

A set is generated into a sibling temporary directory and renamed to ROOT only when complete,
so an interrupted generation never passes for a finished one.

Every image is drawn from its own generator seeded by (seed, split, index): the same parameters
give byte-identical files on the same platform, whatever the order of generation.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import uuid
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from hpa.core.errors import HPAInputError
from hpa.core.io import move_folder_into_place
from hpa.core.labels import CHANNELS, HPA2018
from hpa.data.synthetic.labels import sample_labels
from hpa.data.synthetic.photograph import render_sample
from hpa.data.synthetic.scene import MIN_IMAGE_SIZE

logger = logging.getLogger(__name__)

MANIFEST_NAME = "synthetic.json"
FORMAT_VERSION = 1

_LABEL_COLUMNS = (HPA2018.id_column, HPA2018.column)  # the 2018 layout: Id,Target
_TRAIN_SPLIT, _TEST_SPLIT = 0, 1
# Noisy images barely compress: Huffman-only coding is both the fastest and the smallest.
_PNG_PARAMS = [
    cv2.IMWRITE_PNG_COMPRESSION,
    1,
    cv2.IMWRITE_PNG_STRATEGY,
    cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY,
]


def _image_rng(seed: int, split: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, split, index]))


def _sample_id(rng: np.random.Generator) -> str:
    return str(uuid.UUID(bytes=rng.bytes(16)))


def _write_split(
    image_dir: Path, split: int, count: int, image_size: int, seed: int, bar: tqdm
) -> list[tuple[str, str]]:
    """Render and write ``count`` images; returns (Id, Target) rows in index order."""
    image_dir.mkdir(parents=True)
    rows = []
    for index in range(count):
        rng = _image_rng(seed, split, index)
        sample_id = _sample_id(rng)
        labels = sample_labels(1, rng)[0]
        image = render_sample(labels, image_size, rng)
        for color, plane in zip(CHANNELS, image, strict=True):
            path = image_dir / f"{sample_id}_{color}.png"
            if not cv2.imwrite(str(path), plane, _PNG_PARAMS):
                raise OSError(f"could not write {path}")
        rows.append((sample_id, HPA2018.format(labels)))
        bar.update(1)
    return rows


def _write_csv(path: Path, header: tuple[str, str], rows: list[tuple[str, str]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _manifest(num_images: int, image_size: int, seed: int, num_test: int) -> dict[str, int]:
    return {
        "format_version": FORMAT_VERSION,
        "num_images": num_images,
        "image_size": image_size,
        "seed": seed,
        "num_test": num_test,
    }


def _read_manifest(root: Path) -> dict | None:
    try:
        manifest = json.loads((root / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def is_complete(root: str | Path) -> bool:
    """True when ``root`` holds a finished synthetic set: a readable manifest and train.csv."""
    root = Path(root)
    manifest = _read_manifest(root)
    return (
        manifest is not None
        and manifest.get("format_version") == FORMAT_VERSION
        and (root / "train.csv").is_file()
    )


def _check_replaceable(root: Path) -> None:
    """Refuse to overwrite anything that is not an empty directory or a synthetic set."""
    if not root.exists() and not root.is_symlink():
        return
    if not root.is_dir():
        raise HPAInputError(f"{root} exists and is not a directory; refusing to replace it")
    if (root / MANIFEST_NAME).is_file() or not any(root.iterdir()):
        return
    raise HPAInputError(
        f"{root} is a non-empty directory without {MANIFEST_NAME}, so it may hold real data; "
        "refusing to overwrite it with a synthetic set. Choose another directory or delete it."
    )


def _check_parameters(num_images: int, image_size: int, seed: int, num_test: int) -> None:
    for name, value, minimum in (
        ("num_images", num_images, 1),
        ("image_size", image_size, MIN_IMAGE_SIZE),
        ("seed", seed, 0),
        ("num_test", num_test, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def generate_dataset(
    root: str | Path,
    num_images: int,
    image_size: int = 256,
    seed: int = 0,
    num_test: int = 0,
    progress: bool = True,
) -> Path:
    """Write a synthetic set in the Kaggle layout to ``root``, replacing an old synthetic set.

    Raises HPAInputError when ``root`` is a non-empty directory that is not a synthetic set.
    """
    _check_parameters(num_images, image_size, seed, num_test)
    root = Path(os.path.abspath(root))  # normalises "." and "x/" so the sibling name is sane
    _check_replaceable(root)
    work_dir = root.with_name(f"{root.name}.tmp-{os.getpid()}")
    if work_dir.exists():
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True)
    logger.info(
        "generating %d train + %d test synthetic images of %d px (seed %d) into %s",
        num_images,
        num_test,
        image_size,
        seed,
        root,
    )
    try:
        with tqdm(
            total=num_images + num_test, disable=not progress, unit="img", desc="synthetic"
        ) as bar:
            train_rows = _write_split(
                work_dir / "train", _TRAIN_SPLIT, num_images, image_size, seed, bar
            )
            test_rows = []
            if num_test > 0:
                test_rows = _write_split(
                    work_dir / "test", _TEST_SPLIT, num_test, image_size, seed, bar
                )
        ids = [sample_id for sample_id, _ in train_rows + test_rows]
        if len(set(ids)) != len(ids):  # 128-bit random ids: never expected
            raise RuntimeError("synthetic sample ids collided; try another seed")
        _write_csv(work_dir / "train.csv", _LABEL_COLUMNS, train_rows)
        if num_test > 0:
            _write_csv(
                work_dir / "sample_submission.csv",
                ("Id", "Predicted"),
                [(i, "0") for i, _ in test_rows],
            )
            _write_csv(work_dir / "test_labels.csv", _LABEL_COLUMNS, test_rows)
        manifest = _manifest(num_images, image_size, seed, num_test)
        (work_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
        _move_into_place(work_dir, root, manifest)
    except BaseException:
        shutil.rmtree(work_dir, ignore_errors=True)
        raise
    logger.info("synthetic set ready in %s", root)
    return root


def _move_into_place(work_dir: Path, root: Path, manifest: dict[str, int]) -> None:
    _check_replaceable(root)
    move_folder_into_place(
        work_dir, root, lambda: is_complete(root) and _read_manifest(root) == manifest
    )


def ensure_dataset(
    root: str | Path,
    num_images: int,
    image_size: int,
    seed: int,
    num_test: int = 0,
    progress: bool = True,
) -> Path:
    """``root`` if it already holds a complete set with these parameters, else generate it."""
    _check_parameters(num_images, image_size, seed, num_test)
    root = Path(root)
    if is_complete(root) and _read_manifest(root) == _manifest(
        num_images, image_size, seed, num_test
    ):
        logger.info("using the existing synthetic set in %s", root)
        return root
    return generate_dataset(root, num_images, image_size, seed, num_test, progress)


def ensure_synthetic_root(
    root: str | Path,
    num_images: int,
    image_size: int,
    seed: int,
    num_test: int = 0,
    generate_into: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """The synthetic set that ``data=synthetic`` reads at ``root``.

    When ``root`` is ``generate_into`` (the config's own folder for these parameters; None means
    ``root``) the set is generated there once (``ensure_dataset``). A ``root`` pointed elsewhere
    must already hold a synthetic set (one written by ``hpa-synthetic``): anything else is
    refused, so a folder of real data, or an empty one meant for it, is never filled with
    synthetic images.
    """
    root = Path(root)
    if generate_into is None or root.resolve() == Path(generate_into).resolve():
        return ensure_dataset(root, num_images, image_size, seed, num_test, progress)
    if is_complete(root):
        logger.info("reading the synthetic set in %s: %s", root, _read_manifest(root))
        return root
    raise HPAInputError(
        f"data.root={root} is not a synthetic set (it has no {MANIFEST_NAME}), but data=synthetic "
        f"only reads synthetic sets. For real data in the Kaggle layout use "
        f"data=hpa data.root={root}; to make a synthetic set there, write it first with "
        f"`hpa-synthetic {root} --n N --size S`."
    )
