"""`python -m hpa.eval` on a run's best checkpoint reproduces that run's test metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from cli import SMALL_SYNTHETIC_SET, run_module

from hpa.labels import CLASS_NAMES
from hpa.metrics import TEST_F1_MACRO, TEST_F1_SAMPLES, TEST_LOSS


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("eval")
    result = run_module(
        "hpa.train",
        f"hydra.run.dir={root / 'run'}",
        f"paths.data_dir={root / 'data'}",
        *SMALL_SYNTHETIC_SET,
        "debug=fast",
        "trainer.limit_test_batches=1.0",
        "model=cnn",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "run"


def test_eval_of_the_best_checkpoint_reproduces_the_run(trained_run: Path, tmp_path: Path):
    result = run_module(
        "hpa.eval",
        f"ckpt_path={trained_run / 'checkpoints' / 'best.ckpt'}",
        f"hydra.run.dir={tmp_path / 'eval'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    trained = json.loads((trained_run / "metrics.json").read_text())
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    for name in (TEST_F1_MACRO, TEST_F1_SAMPLES, TEST_LOSS):
        assert evaluated[name] == pytest.approx(trained[name], abs=1e-6)

    report = pd.read_csv(tmp_path / "eval" / "test_per_class.csv")
    assert list(report["class_name"]) == list(CLASS_NAMES)
    assert set(report.columns) >= {"precision", "recall", "f1", "support"}
    split = pd.read_csv(trained_run / "split.csv")
    assert report["support"].sum() >= (split["split"] == "test").sum()
    assert "Nucleoplasm" in result.stdout


def test_eval_of_a_missing_checkpoint_is_refused(tmp_path: Path):
    result = run_module(
        "hpa.eval", f"ckpt_path={tmp_path / 'none.ckpt'}", f"hydra.run.dir={tmp_path}"
    )
    assert result.returncode == 2
    assert "none.ckpt" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
