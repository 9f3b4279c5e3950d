"""End to end: the real `python -m hpa.train` CLI on a small generated set, artifacts checked."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from cli import SMALL_SYNTHETIC_SET, run_module

from hpa.core.labels import HPA2018
from hpa.core.metric_names import TEST_F1_MACRO, TEST_F1_SAMPLES, VAL_F1_MACRO, VAL_F1_SAMPLES
from hpa.core.run_dir import RunDir
from hpa.core.thresholds_file import load_thresholds
from hpa.data.datamodule import HPADataModule
from hpa.data.synthetic import generate_dataset


def run_train(
    tmp_path: Path, *overrides: str, data: tuple[str, ...] = SMALL_SYNTHETIC_SET, check: bool = True
) -> subprocess.CompletedProcess:
    run_dir, data_dir = f"hydra.run.dir={tmp_path / 'run'}", f"paths.data_dir={tmp_path / 'data'}"
    result = run_module("hpa.train", run_dir, data_dir, *data, *overrides)
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_debug_fast_run_writes_every_artifact(tmp_path: Path):
    run_train(tmp_path, "debug=fast", "model=resnet18", "data.oversample=true")
    run_dir = tmp_path / "run"

    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert RunDir(run_dir).evaluated_weights()["weights"] == "best.ckpt"
    assert RunDir(run_dir).label_set() == HPA2018
    assert len(RunDir(run_dir).class_counts()) == HPA2018.num_classes

    split = pd.read_csv(run_dir / "split.csv")
    assert list(split.columns[:2]) == ["Id", "split"]
    assert len(split) == 120
    assert set(split["split"]) == {"train", "val", "test"}

    final = json.loads((run_dir / "metrics.json").read_text())
    for name in (VAL_F1_MACRO, VAL_F1_SAMPLES, TEST_F1_MACRO, TEST_F1_SAMPLES):
        assert isinstance(final[name], float) and 0.0 <= final[name] <= 1.0

    predictions = pd.read_csv(run_dir / "test_predictions.csv", keep_default_na=False)
    assert list(predictions.columns) == ["Id", *HPA2018.class_names, "Target"]
    test_ids = set(split.loc[split["split"] == "test", "Id"])
    assert set(predictions["Id"]) <= test_ids and len(predictions) > 0
    probabilities = predictions[list(HPA2018.class_names)].to_numpy()
    assert ((probabilities >= 0) & (probabilities <= 1)).all()

    checkpoint = torch.load(
        run_dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True
    )
    assert checkpoint["hyper_parameters"]["name"] == "resnet18"
    assert checkpoint["state_dict"]["channel_mean"].shape == (1, 4, 1, 1)

    # tuned per-class thresholds: in thresholds.json and in the best checkpoint, both reported
    thresholds = load_thresholds(run_dir / "thresholds.json")
    assert thresholds.shape == (28,)
    stored = checkpoint["state_dict"]["class_thresholds"].numpy()
    np.testing.assert_allclose(stored, thresholds, atol=1e-6)
    assert 0.0 <= final["test/f1_macro@0.5"] <= 1.0
    assert 0.0 <= final["test/f1_samples@0.5"] <= 1.0


@pytest.mark.slow
def test_split_file_is_reused(tmp_path: Path):
    first = tmp_path / "first"
    run_train(first, "debug=fast", "model=cnn")
    second = tmp_path / "second"
    split_file = first / "run" / "split.csv"
    run_train(second, "debug=fast", "model=cnn", "seed=7", f"data.split_file={split_file}")
    assert (first / "run" / "split.csv").read_text() == (second / "run" / "split.csv").read_text()


def test_missing_data_root_stops_with_a_clear_message(tmp_path: Path):
    result = run_train(
        tmp_path, "data=hpa", f"data.root={tmp_path / 'nowhere'}", data=(), check=False
    )
    assert result.returncode == 2
    output = result.stdout + result.stderr
    assert "nowhere" in output and "does not exist" in output
    assert "Traceback" not in output


@pytest.mark.slow
def test_same_config_and_seed_give_the_same_split_and_metrics(tmp_path: Path):
    overrides = ("debug=fast", "model=cnn", "data.num_workers=1", "trainer.limit_train_batches=6")
    run_train(tmp_path / "a", *overrides)
    run_train(tmp_path / "b", *overrides)
    first, second = tmp_path / "a" / "run", tmp_path / "b" / "run"
    assert (first / "split.csv").read_text() == (second / "split.csv").read_text()
    assert json.loads((first / "metrics.json").read_text()) == json.loads(
        (second / "metrics.json").read_text()
    )


@pytest.mark.slow
def test_last_checkpoint_follows_every_epoch_even_without_improvement(tmp_path: Path):
    # lr=0: the validation metric never improves after epoch 0, so best.ckpt stays at epoch 0;
    # last.ckpt, which a resume starts from, must still be the final epoch's
    run_train(tmp_path, "debug=fast", "model=cnn", "trainer.max_epochs=2", "optimizer.lr=0.0")
    checkpoints = tmp_path / "run" / "checkpoints"
    best = torch.load(checkpoints / "best.ckpt", map_location="cpu", weights_only=True)
    last = torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=True)
    assert best["epoch"] == 0
    assert last["epoch"] == 1


@pytest.mark.slow
def test_a_data_root_that_is_not_a_synthetic_set_is_refused_with_data_synthetic(tmp_path: Path):
    """`data.root=X` without `data=hpa` must not generate synthetic images into X."""
    empty = tmp_path / "empty"
    empty.mkdir()
    real_looking = tmp_path / "real"
    (real_looking / "train").mkdir(parents=True)
    (real_looking / "train.csv").write_text("Id,Target\na,0\n")
    for root in (empty, real_looking, tmp_path / "absent"):
        result = run_train(
            tmp_path / "runs" / root.name, "debug=fast", f"data.root={root}", check=False
        )
        output = result.stdout + result.stderr
        assert result.returncode == 2, output[-3000:]
        assert f"data=hpa data.root={root}" in output and "Traceback" not in output
    assert list(empty.iterdir()) == [] and not (tmp_path / "absent").exists()
    assert sorted(p.name for p in real_looking.iterdir()) == ["train", "train.csv"]


def test_a_synthetic_set_written_by_hand_is_read_where_it_is(tmp_path: Path):
    own_set = tmp_path / "own"
    generate_dataset(own_set, num_images=40, image_size=32, seed=3, progress=False)
    synthetic = {"num_images": 40, "image_size": 32, "seed": 0, "generate_into": tmp_path / "x"}
    config = {"root": own_set, "image_size": 32, "synthetic": synthetic}
    datamodule = HPADataModule.from_config(config, HPA2018)
    datamodule.prepare_data()  # reads the set in place, generates nothing elsewhere
    assert not (tmp_path / "x").exists()


@pytest.mark.slow  # the default suite stays under 10 minutes; make test-slow runs it
def test_a_run_without_a_best_checkpoint_says_its_metrics_are_of_the_final_weights(
    tmp_path: Path,
):
    result = run_train(
        tmp_path, "debug=fast", "model=cnn", "callbacks=none", "+trainer.enable_checkpointing=false"
    )
    run = RunDir(tmp_path / "run")
    assert run.metrics()  # the final metrics, of the final weights
    assert "no best checkpoint was saved" in result.stdout + result.stderr
    assert run.evaluated_weights()["weights"] == "final"
    assert "no best checkpoint" in run.evaluated_weights()["why"]
    assert not (run.path / "checkpoints" / "best.ckpt").exists()
