"""The quality benchmark's instruments (benchmarks/quality): the independent data set, the plain
loop's record, the variant overrides, the report's rules and policies, and (slow) the driver
running a real plain and a real hpa.train run."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf
from test_losses import cpu_trainer, tiny_loader
from test_train import run_train

from benchmarks.common import train_config
from benchmarks.quality import run as driver
from benchmarks.quality.cells import Scene
from benchmarks.quality.generate import ensure_independent_set
from benchmarks.quality.labels import draw_labels, real_class_rates
from benchmarks.quality.patterns import PATTERNS
from benchmarks.quality.plain import PlainOptions, load_splits, train_plain
from benchmarks.quality.record import Record, RunKey, find_records, load_record, record_path
from benchmarks.quality.recorder import EpochPredictions
from benchmarks.quality.report import RULES, print_report, score_run, validation_curves
from hpa.core.errors import HPAInputError
from hpa.core.labels import HPA2018
from hpa.data.datamodule import HPADataModule
from hpa.data.split import save_split
from hpa.data.synthetic.labels import KAGGLE_LABELS_PER_IMAGE
from hpa.models.averaging import EMAWeights
from hpa.models.module import HPAModule


@pytest.fixture(scope="module")
def independent_set(tmp_path_factory) -> Path:
    return ensure_independent_set(tmp_path_factory.mktemp("independent") / "set", 16, 48, seed=3)


def test_independent_set_is_repeatable_and_read_by_hpa(independent_set: Path, tmp_path: Path):
    again = ensure_independent_set(tmp_path / "again", 16, 48, seed=3, progress=False)
    assert (again / "train.csv").read_text() == (independent_set / "train.csv").read_text()
    table = pd.read_csv(independent_set / "train.csv")
    assert len(table) == 16 and all(uuid.UUID(i).version == 4 for i in table["Id"])
    for name in ("red", "green"):
        file_name = f"{table['Id'][5]}_{name}.png"
        assert (again / "train" / file_name).read_bytes() == (
            independent_set / "train" / file_name
        ).read_bytes()
    other_seed = ensure_independent_set(tmp_path / "other", 16, 48, seed=4, progress=False)
    assert set(pd.read_csv(other_seed / "train.csv")["Id"]).isdisjoint(table["Id"])

    config = {"root": independent_set, "image_size": 32, "num_workers": 0, "validate": "full"}
    datamodule = HPADataModule.from_config(config, HPA2018)
    datamodule.setup("fit")
    assert sum(len(dataset) for dataset in datamodule.datasets.values()) == 16
    image = datamodule.datasets["train"][0]["image"]
    assert tuple(image.shape) == (4, 32, 32) and image.float().std() > 0
    with pytest.raises(HPAInputError, match="refusing"):
        (tmp_path / "busy").mkdir()
        (tmp_path / "busy" / "notes.txt").write_text("mine")
        ensure_independent_set(tmp_path / "busy", 4, 48, progress=False)


def test_labels_follow_the_real_class_rates_and_label_counts():
    rng = np.random.default_rng(0)
    labels = np.array([draw_labels(rng) for _ in range(20_000)])
    rates = labels.mean(axis=0)
    common = real_class_rates() > 0.02
    np.testing.assert_allclose(rates[common], real_class_rates()[common], rtol=0.1)
    label_counts = np.bincount(labels.sum(axis=1), minlength=6)[1:6] / len(labels)
    real = np.array([KAGGLE_LABELS_PER_IMAGE[k] for k in range(1, 6)], dtype=float)
    np.testing.assert_allclose(label_counts, real / real.sum(), atol=0.01)


def test_every_class_pattern_draws_inside_the_cells():
    scene = Scene(96, np.random.default_rng(1))
    every_cell = np.ones(len(scene.cells), dtype=bool)
    assert len(PATTERNS) == HPA2018.num_classes
    fields = []
    for class_id, pattern in enumerate(PATTERNS):
        field = pattern(scene, every_cell)
        assert field.shape == (96, 96) and field.min() >= -1e-6, class_id
        assert field.sum() > 1.0, class_id
        fields.append(field.ravel() / np.linalg.norm(field))
    similarity = np.array(fields) @ np.array(fields).T
    assert np.all(similarity[~np.eye(HPA2018.num_classes, dtype=bool)] < 0.995)  # no two the same


def test_plain_loop_records_every_epoch(independent_set: Path, tmp_path: Path):
    split = tmp_path / "split.csv"
    table = pd.read_csv(independent_set / "train.csv")
    assignment = np.array(["train"] * 10 + ["val"] * 3 + ["test"] * 3)
    save_split(split, table["Id"].to_numpy(), assignment)
    splits = load_splits(independent_set, split, 32)
    options = PlainOptions(image_size=32, epochs=2, batch_size=4)
    record = train_plain(splits, seed=0, options=options, path=tmp_path / "plain.npz")
    saved = load_record(tmp_path / "plain.npz")
    assert saved.epochs == [0, 1] and len(saved.val_loss) == 2
    assert saved.val_probabilities[1].shape == (3, HPA2018.num_classes)
    assert saved.test_probabilities[0].shape == (3, HPA2018.num_classes)
    np.testing.assert_array_equal(saved.val_probabilities[1], record.val_probabilities[1])
    np.testing.assert_array_equal(saved.val_targets, splits["val"][1].numpy())
    assert saved.meta["val_ids"] == splits["val"][2].tolist()
    assert saved.meta["steps_per_epoch"] == 3  # batches of 4, 4 and 2 of the 10 train images
    assert saved.meta["options"]["flips"] == "image"
    assert all(np.isfinite(saved.val_loss))


def test_every_hpa_variant_composes_with_its_one_difference():
    base = train_config("data=hpa", "data.root=/nowhere")
    before = train_config("data=hpa", "data.root=/nowhere", *driver.BEFORE)
    assert before != base  # the ablations' reference is the defaults before the benchmark
    for name, (program, overrides) in driver.VARIANTS.items():
        if program == driver.HPA:
            cfg = train_config("data=hpa", "data.root=/nowhere", *overrides)
            assert cfg != base or name == "hpa", name
            assert cfg != before or name == "hpa_before", name
    assert "affine" not in train_config(*driver.VARIANTS["hpa_no_affine"][1]).augment
    no_stop = train_config(*driver.VARIANTS["hpa_no_early_stop"][1])
    assert no_stop.callbacks.early_stopping is None
    weak = OmegaConf.to_container(train_config(*driver.VARIANTS["hpa_weak_affine"][1]).augment)
    assert weak["affine"]["rotate"] == [-15, 15]


def _hand_made_record() -> Record:
    """Three epochs; val and test share their labels. Epoch index 1 separates every class
    perfectly (val F1 1), epoch 2 has the lowest val loss but predicts nothing above 0.5."""
    targets = np.zeros((6, HPA2018.num_classes), dtype=np.uint8)
    targets[np.arange(6), np.arange(6)] = 1
    noise = np.random.default_rng(0).uniform(0.0, 0.3, targets.shape)
    record = Record(targets, targets.copy(), targets.mean(axis=0))
    perfect = np.where(targets == 1, 0.9, 0.1)
    for epoch, (probabilities, loss) in enumerate([(noise, 0.6), (perfect, 0.4), (noise, 0.2)]):
        record.add_epoch(epoch, 1.0 + epoch, loss, probabilities, probabilities)
    return record


def test_report_rules_and_policies_on_a_hand_made_record(tmp_path: Path, capsys):
    record = _hand_made_record()
    curves = validation_curves(record)
    assert curves["val_f1"][1] == pytest.approx(
        6 / HPA2018.num_classes
    )  # 6 classes perfect, 22 empty
    assert RULES["val_f1"](curves) == 1
    assert RULES["val_loss"](curves) == 2
    assert RULES["last"](curves) == 2
    assert RULES["val_f1_mean3"](curves) == 0  # the ends average two epochs: 0.107, 0.071, 0.107
    key = RunKey("toy-n6-s8", 32, "plain", 0, 3)
    rows = {(row["rule"], row["policy"]): row for row in score_run(key, record)}
    assert rows["val_f1", "0.5"]["macro_f1"] == pytest.approx(6 / HPA2018.num_classes)
    assert rows["val_f1", "0.5"]["epoch"] == 2  # 1-based
    assert rows["val_f1", "tuned"]["samples_f1"] == pytest.approx(1.0)
    assert rows["val_loss", "0.5"]["samples_f1"] == 0.0  # nothing above 0.5, no fallback
    record.save(record_path(tmp_path, key))
    assert [found for found, _ in find_records(tmp_path)] == [key]
    scores = print_report(tmp_path, csv=tmp_path / "scores.csv")
    printed = capsys.readouterr().out
    assert "## toy-n6-s8, 32 px, 3 epochs" in printed
    assert "| plain | 1 | 3.0 | 2.0 | 0.214 |" in printed
    assert len(pd.read_csv(tmp_path / "scores.csv")) == len(scores) == len(rows)


@pytest.mark.slow
def test_driver_records_a_plain_and_an_hpa_run_as_hpa_scores_them(tmp_path: Path):
    arguments = ["--out", str(tmp_path), "--datasets", "independent", "--variants", "plain,hpa"]
    arguments += [
        "--n",
        "40",
        "--size",
        "48",
        "--image-size",
        "32",
        "--epochs",
        "2",
        "--seeds",
        "0",
    ]
    assert driver.main(arguments) == 0
    records = dict(find_records(tmp_path))
    assert [key.variant for key in records] == ["hpa", "plain"]
    for key, path in records.items():
        record = load_record(path)
        assert record.epochs == [0, 1], key
        if key.variant != "hpa":
            continue
        metrics = json.loads((tmp_path / "runs" / key.name / "metrics.json").read_text())
        curves = validation_curves(record)
        kept = RULES["val_f1"](curves)
        assert curves["val_f1"][kept] == pytest.approx(metrics["val/f1_macro"], abs=1e-6)
        assert curves["val_loss"][kept] == pytest.approx(metrics["val/loss"], abs=1e-4)
        rows = {(row["rule"], row["policy"]): row for row in score_run(key, record)}
        # hpa's run decides at its own policy's thresholds (model.thresholds, rate by default)
        policy = OmegaConf.load(
            tmp_path / "runs" / key.name / ".hydra/config.yaml"
        ).model.thresholds
        assert rows["val_f1", policy]["macro_f1"] == pytest.approx(metrics["test/f1_macro"])
        assert rows["val_f1", "0.5"]["macro_f1"] == pytest.approx(metrics["test/f1_macro@0.5"])
    stamps = {path: path.stat().st_mtime_ns for path in records.values()}
    assert driver.main(arguments) == 0  # cached: nothing is trained again
    assert {path: path.stat().st_mtime_ns for path in records.values()} == stamps


def test_recorder_records_the_average_that_validation_judges_under_ema(tmp_path: Path):
    record_file = tmp_path / "record.npz"
    run_train(
        tmp_path,
        "debug=fast",
        "model=cnn",
        "callbacks=ema",
        "trainer.max_epochs=2",
        "trainer.limit_val_batches=1.0",
        "+trainer.accumulate_grad_batches=3",
        "+callbacks.quality_recorder._target_=benchmarks.quality.recorder.EpochPredictions",
        f"+callbacks.quality_recorder.path={record_file}",
    )
    run_dir = tmp_path / "run"
    record = load_record(record_file)
    assert record.epochs == [0, 1]
    # 4 batches an epoch (debug=fast), accumulated by 3: a step after the third and one after
    # the last (num_training_batches // 3 would say 1)
    assert record.meta["steps_per_epoch"] == 2
    # metrics.json's val/ figures come from best.ckpt, whose state_dict is the EMA of the weights
    metrics = json.loads((run_dir / "metrics.json").read_text())
    curves = validation_curves(record)
    kept = RULES["val_f1"](curves)
    assert curves["val_loss"][kept] == pytest.approx(metrics["val/loss"], abs=1e-4)
    assert curves["val_f1"][kept] == pytest.approx(metrics["val/f1_macro"], abs=1e-6)

    checkpoint = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    average, raw = checkpoint["state_dict"], checkpoint["current_model_state"]
    assert any(not torch.equal(average[name], raw[name]) for name in average)  # they differ


def test_recorder_refuses_to_come_before_the_averaging_callback(tmp_path: Path):
    recorder = EpochPredictions(tmp_path / "record.npz")
    trainer = cpu_trainer(tmp_path, max_epochs=1, callbacks=[recorder, EMAWeights()])
    with pytest.raises(RuntimeError, match="after the weight-averaging callback EMAWeights"):
        trainer.fit(HPAModule(name="seed_cnn"), train_dataloaders=tiny_loader(1))
    assert not (tmp_path / "record.npz").exists()
