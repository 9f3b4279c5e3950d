"""`python -m hpa.eval` on a run's best checkpoint reproduces that run's test metrics."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from cli import SMALL_SYNTHETIC_SET, run_module, train_multirun

from hpa.core.labels import HPA2018
from hpa.core.metric_names import TEST_F1_MACRO, TEST_F1_SAMPLES, TEST_LOSS
from hpa.core.run_dir import RunDir
from hpa.data.dataset import RGBYDataset
from hpa.evaluation.tta import center_crop, predict_with_tta
from hpa.models.checkpoints import load_module


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
    assert list(report["class_name"]) == list(HPA2018.class_names)
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


def evaluate(output: Path, *overrides: str):
    return run_module("hpa.eval", f"hydra.run.dir={output}", *overrides)


@pytest.mark.slow
def test_eval_with_dihedral_tta_averages_the_eight_symmetries(trained_run: Path, tmp_path: Path):
    checkpoint = trained_run / "checkpoints" / "best.ckpt"
    result = evaluate(tmp_path / "tta", f"ckpt_path={checkpoint}", "tta=dihedral")
    assert result.returncode == 0, result.stderr[-3000:]
    evaluated = json.loads((tmp_path / "tta" / "metrics.json").read_text())
    assert 0.0 <= evaluated[TEST_F1_MACRO] <= 1.0

    # the probabilities written are those of the model on the 8 transformed copies, averaged
    predictions = pd.read_csv(tmp_path / "tta" / "test_predictions.csv", dtype={"Id": str})
    model = load_module(checkpoint).eval()
    data_root = next((trained_run.parent / "data").glob("synthetic-*"))
    ids = predictions["Id"].to_numpy()[:4]
    # the run trained on 64 px crops of images read at 80 px (the defaults' 1.25 x): evaluation
    # scores the centre 64 px crop of each image read at 80 px
    assert RunDir(trained_run).load_size() == 80
    dataset = RGBYDataset(data_root / "train", ids, None, image_size=80)
    images = center_crop(torch.stack([dataset[i]["image"] for i in range(len(ids))]), 64)
    with torch.no_grad():
        expected = predict_with_tta(lambda x: torch.sigmoid(model(x)), images, "dihedral")
        plain = torch.sigmoid(model(images))
    written = predictions[list(HPA2018.class_names)].to_numpy()[:4]
    np.testing.assert_allclose(written, expected.numpy(), atol=1e-5)
    assert not np.allclose(written, plain.numpy(), atol=1e-5)  # TTA changed something


def test_an_unknown_tta_mode_is_refused_before_any_work(trained_run: Path, tmp_path: Path):
    checkpoint = trained_run / "checkpoints" / "best.ckpt"
    result = evaluate(tmp_path, f"ckpt_path={checkpoint}", "tta=rot45")
    assert result.returncode == 2
    output = result.stdout + result.stderr
    assert "tta='rot45'" in output and "dihedral" in output and "Traceback" not in output


def test_an_ensemble_of_one_checkpoint_twice_scores_like_the_checkpoint(
    trained_run: Path, tmp_path: Path
):
    checkpoint = trained_run / "checkpoints" / "best.ckpt"
    result = evaluate(tmp_path / "pair", f"ckpt_path=[{checkpoint},{checkpoint}]")
    assert result.returncode == 0, result.stderr[-3000:]
    trained = json.loads((trained_run / "metrics.json").read_text())
    ensemble = json.loads((tmp_path / "pair" / "metrics.json").read_text())
    for name in (TEST_F1_MACRO, TEST_F1_SAMPLES, f"{TEST_F1_MACRO}@0.5"):
        assert ensemble[name] == pytest.approx(trained[name], abs=1e-6)
    assert ensemble[f"member0/{TEST_F1_MACRO}"] == pytest.approx(trained[TEST_F1_MACRO])
    assert ensemble[f"member1/{TEST_F1_MACRO}"] == pytest.approx(trained[TEST_F1_MACRO])


@pytest.fixture(scope="module")
def kfold_sweep(trained_run: Path) -> Path:
    """Two folds of one k-fold split, trained as a multirun on the trained run's data."""
    sweep_dir = trained_run.parent / "kfold"
    result = train_multirun(
        sweep_dir,
        trained_run.parent / "data",
        *SMALL_SYNTHETIC_SET,
        "debug=fast",
        "model=cnn",
        "trainer.limit_test_batches=1.0",
        "data.num_folds=3",
        "data.fold=0,1",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return sweep_dir


def test_a_kfold_multirun_folder_is_evaluated_as_an_ensemble(kfold_sweep: Path, tmp_path: Path):
    result = evaluate(tmp_path / "ens", f"ckpt_path={kfold_sweep}")
    assert result.returncode == 0, result.stderr[-3000:]
    ensemble = json.loads((tmp_path / "ens" / "metrics.json").read_text())
    folds = [json.loads((kfold_sweep / job / "metrics.json").read_text()) for job in "01"]
    for index, fold in enumerate(folds):
        assert ensemble[f"member{index}/{TEST_F1_MACRO}"] == pytest.approx(fold[TEST_F1_MACRO])

    # the ensemble's probabilities are the mean of the folds' own test predictions
    columns = list(HPA2018.class_names)
    written = pd.read_csv(tmp_path / "ens" / "test_predictions.csv", dtype={"Id": str})
    per_fold = [
        pd.read_csv(kfold_sweep / job / "test_predictions.csv", dtype={"Id": str}) for job in "01"
    ]
    assert list(written["Id"]) == list(per_fold[0]["Id"]) == list(per_fold[1]["Id"])
    mean = (per_fold[0][columns].to_numpy() + per_fold[1][columns].to_numpy()) / 2
    np.testing.assert_allclose(written[columns].to_numpy(), mean, atol=1e-5)
    assert 0.0 <= ensemble[TEST_F1_MACRO] <= 1.0


def test_members_with_different_test_splits_are_refused(trained_run: Path, tmp_path: Path):
    # a copy of the run whose split.csv moved one image from test to train: as if trained on
    # another split
    other_run = tmp_path / "other_run"
    shutil.copytree(trained_run, other_run)
    split = pd.read_csv(other_run / "split.csv", dtype={"Id": str})
    first_test_row = split.index[split["split"] == "test"][0]
    split.loc[first_test_row, "split"] = "train"
    split.to_csv(other_run / "split.csv", index=False)

    plain = trained_run / "checkpoints" / "best.ckpt"
    other = other_run / "checkpoints" / "best.ckpt"
    result = evaluate(tmp_path / "eval", f"ckpt_path=[{plain},{other}]")
    assert result.returncode == 2, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "test split" in output and "other_run" in output and "Traceback" not in output


@pytest.mark.slow
def test_eval_takes_the_trainer_group_of_training(trained_run: Path, tmp_path: Path):
    """`trainer=...` overrides reach eval's Trainer: bf16 autocast on the CPU here."""
    checkpoint = trained_run / "checkpoints" / "best.ckpt"
    plain = evaluate(tmp_path / "fp32", f"ckpt_path={checkpoint}")
    bf16 = evaluate(tmp_path / "bf16", f"ckpt_path={checkpoint}", "trainer=cpu",
                    "trainer.precision=bf16-mixed")  # fmt: skip
    assert plain.returncode == 0 and bf16.returncode == 0, bf16.stderr[-3000:]
    assert "bfloat16" in bf16.stdout + bf16.stderr
    assert "bfloat16" not in plain.stdout + plain.stderr
    fp32 = json.loads((tmp_path / "fp32" / "metrics.json").read_text())
    mixed = json.loads((tmp_path / "bf16" / "metrics.json").read_text())
    assert mixed[TEST_LOSS] == pytest.approx(fp32[TEST_LOSS], rel=0.05)  # bf16, not another model
    assert mixed[TEST_LOSS] != fp32[TEST_LOSS]
