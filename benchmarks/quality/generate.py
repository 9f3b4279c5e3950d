"""An independent benchmark set in the Kaggle layout, made without hpa's synthetic generator:
its own cells (``cells``), stains and microscope (``camera``), class patterns (``patterns``)
and label draws (``labels``).

    python -m benchmarks.quality.generate ROOT --n 900 --size 256 --seed 0

writes ROOT/train.csv (Id,Target), ROOT/train/{Id}_{red,green,blue,yellow}.png (8-bit
grayscale) and ROOT/independent.json (the parameters). The set is written to a sibling folder and
renamed into place when complete; an existing set with the same parameters is reused. Image i
is drawn from its own generator seeded by (seed, i), so a set is repeatable.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import uuid
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from benchmarks.quality.camera import render_sample
from benchmarks.quality.labels import draw_labels
from hpa.core.errors import HPAInputError
from hpa.core.io import write_csv, write_json
from hpa.core.labels import CHANNELS, HPA2018

log = logging.getLogger(__name__)

MANIFEST_NAME = "independent.json"
GENERATOR_VERSION = 1


def _manifest(num_images: int, image_size: int, seed: int) -> dict:
    return dict(generator=GENERATOR_VERSION, num_images=num_images, size=image_size, seed=seed)


def _existing_manifest(root: Path) -> dict | None:
    try:
        return json.loads((root / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None


def write_sample(image_dir: Path, index: int, image_size: int, seed: int) -> tuple[str, str]:
    """Draw image ``index`` of the set and write its four PNGs; its (Id, Target) row."""
    rng = np.random.default_rng([seed, index])
    sample_id = str(uuid.UUID(bytes=rng.bytes(16), version=4))
    labels = draw_labels(rng)
    for color, plane in zip(CHANNELS, render_sample(labels, image_size, rng), strict=True):
        path = image_dir / f"{sample_id}_{color}.png"
        if not cv2.imwrite(str(path), plane):
            raise OSError(f"could not write {path}")
    return sample_id, HPA2018.format(labels)


def ensure_independent_set(
    root: str | Path, num_images: int, image_size: int = 256, seed: int = 0, progress=True
) -> Path:
    """``root`` holding the set of these parameters: reused if there, else written."""
    root = Path(os.path.abspath(root))
    manifest = _manifest(num_images, image_size, seed)
    if _existing_manifest(root) == manifest and (root / "train.csv").is_file():
        log.info("using the existing independent set in %s", root)
        return root
    if (
        root.exists()
        and (not root.is_dir() or any(root.iterdir()))
        and not _existing_manifest(root)
    ):
        raise HPAInputError(
            f"{root} is not empty and holds no {MANIFEST_NAME}: refusing to replace it"
        )
    if num_images < 1 or image_size < 32:
        raise HPAInputError(f"need --n >= 1 and --size >= 32, got {num_images} and {image_size}")
    work = root.with_name(f"{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    (work / "train").mkdir(parents=True)
    try:
        rows = [
            write_sample(work / "train", index, image_size, seed)
            for index in tqdm(
                range(num_images), desc="independent set", unit="img", disable=not progress
            )
        ]
        write_csv(work / "train.csv", pd.DataFrame(rows, columns=["Id", "Target"]))
        write_json(work / MANIFEST_NAME, manifest)
        shutil.rmtree(root, ignore_errors=True)
        os.rename(work, root)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    log.info("independent set of %d images of %d px written to %s", num_images, image_size, root)
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--n", type=int, default=900, help="number of images")
    parser.add_argument("--size", type=int, default=256, help="image side in px")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        ensure_independent_set(args.root, args.n, args.size, args.seed, not args.no_progress)
    except HPAInputError as error:
        log.error("%s", error)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
