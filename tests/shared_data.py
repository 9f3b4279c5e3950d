"""Where the tests find the real HPA 2018 files, and a stand-in for the real train.csv.

The real Kaggle files live outside the repository, in ``$HPA_SHARED/data/hpa2018``, else
``<repo>/../shared/data/hpa2018``, else ``/work/shared/data/hpa2018`` (the order the notebooks
and benchmarks use). A clone of the repository has none of them, so:

- tests that need the real PNGs (pixels) skip, saying so (``skip_reason``);
- tests that need real labels only for their statistics read the real train.csv when it is
  there, else a train.csv drawn by ``write_drawn_kaggle_train_csv`` from the Kaggle 2018 class
  counts and labels-per-image law that ``hpa.data.synthetic.labels`` embeds.

``HPA_SHARED=/nonexistent pytest ...`` runs the tests as a clone would.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import NamedTuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]

SHARED_ENV = "HPA_SHARED"
"""Environment variable: the folder holding data/hpa2018 (the notebooks and benchmarks read it)."""

DRAWN_TRAIN_SEED = 2018
"""Seed of the drawn stand-in for the real train.csv (fixed: the tests' outcomes do not vary)."""


class KaggleTrainCsv(NamedTuple):
    path: Path
    real: bool  # False: drawn from the embedded Kaggle class counts (shared_data.py)


class KaggleTrainLabels(NamedTuple):
    ids: np.ndarray
    labels: np.ndarray  # N x 28 uint8
    real: bool


def shared_dir() -> Path:
    """$HPA_SHARED, else <repo>/../shared, else /work/shared (the notebooks' order)."""
    if os.environ.get(SHARED_ENV):
        return Path(os.environ[SHARED_ENV])
    beside = REPO.parent / "shared"
    return beside if beside.is_dir() else Path("/work/shared")


def hpa2018_dir() -> Path:
    """The folder of the real HPA 2018 files (train.csv, sample_submission.csv, real_channels/)."""
    return shared_dir() / "data" / "hpa2018"


def skip_reason(what: str) -> str:
    """Why a test that needs the real Kaggle ``what`` (train.csv, PNGs, ...) skips here."""
    return (
        f"needs the real Kaggle {what} in ../shared/data/hpa2018 (not shipped with the "
        f"repository); looked in {hpa2018_dir()} (set ${SHARED_ENV} to the folder holding "
        "data/hpa2018)"
    )


def write_drawn_kaggle_train_csv(
    path: Path, num_images: int | None = None, seed: int = DRAWN_TRAIN_SEED
) -> Path:
    """Write a train.csv in the Kaggle layout (``Id,Target``, the class ids of a row separated
    by spaces, in no particular order, uuid-like ids) whose rows are drawn by
    ``hpa.data.synthetic.labels.sample_labels``: the real class frequencies and labels-per-image
    law. ``num_images`` defaults to the 31,072 rows of the real file."""
    from hpa.data.synthetic.labels import NUM_KAGGLE_TRAIN_IMAGES, sample_labels

    num_images = NUM_KAGGLE_TRAIN_IMAGES if num_images is None else num_images
    rng = np.random.default_rng(seed)
    labels = sample_labels(num_images, rng)
    ids = [str(uuid.UUID(bytes=rng.bytes(16))) for _ in range(num_images)]
    assert len(set(ids)) == num_images
    rows = []
    for sample_id, row in zip(ids, labels, strict=True):
        classes = rng.permutation(np.flatnonzero(row))  # the real file lists them in any order
        rows.append(f"{sample_id},{' '.join(str(c) for c in classes)}\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("Id,Target\n" + "".join(rows))
    return path
