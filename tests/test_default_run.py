"""The default `python -m hpa.train` (synthetic data, resnet18, 128 px) learns something real.

Slow (about 8.5 minutes on 2 CPU cores): `make test-slow`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from hpa.core.labels import HPA2018

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_default_run_beats_predicting_the_most_frequent_classes(tmp_path: Path):
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "hpa.train", f"hydra.run.dir={run_dir}"]
    command.append(f"paths.data_dir={tmp_path / 'data'}")
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]

    final = json.loads((run_dir / "metrics.json").read_text())
    predictions = pd.read_csv(run_dir / "test_predictions.csv", keep_default_na=False)
    truth = HPA2018.to_matrix(predictions["Target"])
    # The baseline: every image gets the two most frequent classes (Nucleoplasm and Cytosol).
    most_frequent = np.argsort(-truth.sum(axis=0).astype(np.int64))[:2]
    baseline = np.zeros_like(truth)
    baseline[:, most_frequent] = 1
    baseline_macro = f1_score(truth, baseline, average="macro", zero_division=0)

    assert final["test/f1_macro"] > 3 * baseline_macro
    assert final["test/f1_macro"] > 0.12
    assert final["test/f1_samples"] > 0.5
