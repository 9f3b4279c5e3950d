"""Shared fixtures: the real competition files in ../shared (never copied into the repo), or,
for the tests that need real labels only for their statistics, a drawn stand-in (shared_data.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli import SMALL_SYNTHETIC_SET, run_module
from shared_data import (
    KaggleTrainCsv,
    KaggleTrainLabels,
    hpa2018_dir,
    skip_reason,
    write_drawn_kaggle_train_csv,
)

import hpa  # noqa: F401 (registers the resolvers of hpa's configs, hpa.core.resolvers)

SHARED_DATA_DIR = hpa2018_dir()


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The real HPA 2018 files (train.csv, sample_submission.csv, real_channels/)."""
    if not SHARED_DATA_DIR.is_dir():
        pytest.skip(skip_reason("files"))
    return SHARED_DATA_DIR


@pytest.fixture(scope="session")
def real_train_csv() -> Path:
    path = SHARED_DATA_DIR / "train.csv"
    if not path.is_file():
        pytest.skip(skip_reason("train.csv"))
    return path


@pytest.fixture(scope="session")
def real_sample_submission_csv() -> Path:
    path = SHARED_DATA_DIR / "sample_submission.csv"
    if not path.is_file():
        pytest.skip(skip_reason("sample_submission.csv"))
    return path


@pytest.fixture(scope="session")
def kaggle_train_csv(tmp_path_factory: pytest.TempPathFactory) -> KaggleTrainCsv:
    """The real train.csv when ../shared has it, else one drawn in its layout with the same
    31,072 rows from the Kaggle 2018 class counts the package embeds (seeded): for the tests
    that need real labels only for their class frequencies, so that a clone runs them too."""
    path = SHARED_DATA_DIR / "train.csv"
    if path.is_file():
        return KaggleTrainCsv(path, real=True)
    drawn = tmp_path_factory.mktemp("drawn_kaggle") / "train.csv"
    return KaggleTrainCsv(write_drawn_kaggle_train_csv(drawn), real=False)


@pytest.fixture(scope="session")
def kaggle_train_labels(kaggle_train_csv: KaggleTrainCsv) -> KaggleTrainLabels:
    """(ids, N x 28 uint8 labels, real) of kaggle_train_csv, read once per test session."""
    from hpa.core.labels import HPA2018
    from hpa.data.reader import read_labels_csv

    ids, labels = read_labels_csv(kaggle_train_csv.path, HPA2018)
    return KaggleTrainLabels(ids, labels, kaggle_train_csv.real)


@pytest.fixture(scope="session")
def real_channels_dir() -> Path:
    """48 real 512x512 8-bit channel PNGs, each from a different sample, and their labels.csv."""
    path = SHARED_DATA_DIR / "real_channels"
    if not path.is_dir():
        pytest.skip(skip_reason("PNGs"))
    return path


@pytest.fixture(scope="session")
def small_trained_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(best checkpoint, data root) of a smoke run of the seed CNN on 64 px synthetic images
    whose data root has test/ images and a sample_submission.csv; trained once per session for
    the tests of hpa.predict, hpa.explain and hpa.export, which only read it."""
    root = tmp_path_factory.mktemp("small_run")
    result = run_module(
        "hpa.train",
        f"hydra.run.dir={root / 'run'}",
        f"paths.data_dir={root / 'data'}",
        *SMALL_SYNTHETIC_SET,
        "data.synthetic.num_test=12",
        "debug=fast",
        "model=cnn",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data_root = next((root / "data").glob("synthetic-*"))
    return root / "run" / "checkpoints" / "best.ckpt", data_root
