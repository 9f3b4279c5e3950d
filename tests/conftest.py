"""Shared fixtures: the real competition files in ../shared (never copied into the repo)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cli import SMALL_SYNTHETIC_SET, run_module

SHARED_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared/data/hpa2018"


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The real HPA 2018 files (train.csv, sample_submission.csv, real_channels/)."""
    if not SHARED_DATA_DIR.is_dir():
        pytest.skip(f"real HPA data not found at {SHARED_DATA_DIR}")
    return SHARED_DATA_DIR


@pytest.fixture(scope="session")
def real_train_csv(shared_data_dir: Path) -> Path:
    path = shared_data_dir / "train.csv"
    if not path.is_file():
        pytest.skip(f"real train.csv not found at {path}")
    return path


@pytest.fixture(scope="session")
def real_train_labels(real_train_csv: Path) -> tuple[np.ndarray, np.ndarray]:
    """(ids, N x 28 uint8 labels) of the real train.csv, read once per test session."""
    from hpa.core.labels import HPA2018
    from hpa.data.reader import read_labels_csv

    return read_labels_csv(real_train_csv, HPA2018)


@pytest.fixture(scope="session")
def real_channels_dir(shared_data_dir: Path) -> Path:
    """48 real 512x512 8-bit channel PNGs, each from a different sample, and their labels.csv."""
    path = shared_data_dir / "real_channels"
    if not path.is_dir():
        pytest.skip(f"real channel PNGs not found at {path}")
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
