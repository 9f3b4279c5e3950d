"""Training with external roots (data.external) and near-duplicates: grouped splits, external
duplicates of val and test dropped, the leak report, and the train entry point end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from cli import run_module
from planted import append_rows, write_degraded_copy

from hpa.core.errors import HPAInputError
from hpa.core.labels import HPA2018
from hpa.core.metric_names import TEST_F1_MACRO
from hpa.core.run_dir import RunDir
from hpa.data.datamodule import HPADataModule
from hpa.data.duplicates import LEAKS, REPORT_ROWS
from hpa.data.reader import read_labels_csv, read_sample
from hpa.data.split import train_val_test_split
from hpa.data.synthetic import generate_dataset

SIZE = 64
ROOT_COPIES = range(0, 6)  # rows of data.root with a degraded copy in data.root
EXTERNAL_COPIES = range(10, 40)  # rows of data.root with a degraded copy in the external root
BAD_ID = "ext-bad"


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> dict[str, Path]:
    """``root``: 120 synthetic samples and degraded copies (``dup-{Id}``) of 6 of them;
    ``external``: 20 other synthetic samples, degraded copies (``ext-{Id}``) of 30 samples of
    ``root`` and a sample with a bad file."""
    base = tmp_path_factory.mktemp("external")
    root = generate_dataset(base / "root", 120, SIZE, 0, progress=False)
    external = base / "external"
    shutil.copytree(generate_dataset(base / "other", 20, SIZE, 1, progress=False), external)
    table = pd.read_csv(root / "train.csv", dtype=str)
    copies = {"root": {}, "external": {}}
    for where, rows, prefix, folder in (
        ("root", ROOT_COPIES, "dup", root),
        ("external", EXTERNAL_COPIES, "ext", external),
    ):
        for row in rows:
            source = table.Id[row]
            # rescaled, brightened and JPEG-compressed, a different degradation per copy
            write_degraded_copy(
                root / "train",
                source,
                folder / "train",
                f"{prefix}-{source}",
                scale=0.5 + 0.05 * (row % 10),
                gain=1.0 + 0.04 * (row % 8),
                jpeg_quality=50 + row,
            )
            copies[where][f"{prefix}-{source}"] = table.Target[row]
        append_rows(folder / "train.csv", copies[where])
    for color in ("red", "green", "blue", "yellow"):
        (external / "train" / f"{BAD_ID}_{color}.png").write_bytes(b"not a png")
    append_rows(external / "train.csv", {BAD_ID: "0"})
    return {"root": root, "external": external}


def _datamodule(planted: dict[str, Path], **options) -> HPADataModule:
    config = {
        "root": planted["root"],
        "image_size": SIZE,
        "batch_size": 8,
        "num_workers": 0,
        "external": [planted["external"]],
        "on_bad_image": "skip",
        **options,
    }
    datamodule = HPADataModule.from_config(config, HPA2018)
    datamodule.setup("fit")
    return datamodule


def _split_of(datamodule: HPADataModule) -> dict[str, str]:
    ids, assignment = datamodule.split_table
    return dict(zip(ids.tolist(), assignment.tolist(), strict=True))


def _root_pairs(datamodule: HPADataModule) -> set[tuple[str, str]]:
    ids = datamodule.split_table[0]
    pairs = datamodule.root_pairs
    return set(zip(ids[pairs.first].tolist(), ids[pairs.second].tolist(), strict=True))


def test_exactly_the_planted_duplicates_are_found(planted: dict[str, Path]):
    datamodule = _datamodule(planted)
    root_ids = read_labels_csv(planted["root"] / "train.csv", HPA2018)[0]
    assert _root_pairs(datamodule) == {
        (root_ids[row], f"dup-{root_ids[row]}") for row in ROOT_COPIES
    }
    external = datamodule.external[0]
    pairs = datamodule.external_pairs[0]
    found = set(
        zip(external.ids[pairs.first], datamodule.split_table[0][pairs.second], strict=True)
    )
    assert found == {(f"ext-{root_ids[row]}", root_ids[row]) for row in EXTERNAL_COPIES}


@pytest.mark.parametrize("num_folds, fold", [(None, 0), (3, 0), (3, 2)])
def test_duplicate_groups_never_straddle_two_splits(planted: dict[str, Path], num_folds, fold):
    datamodule = _datamodule(planted, num_folds=num_folds, fold=fold)
    split_of = _split_of(datamodule)
    for original, copy in _root_pairs(datamodule):
        assert split_of[original] == split_of[copy]
    assert set(split_of.values()) == {"train", "val", "test"}


def test_external_duplicates_of_val_and_test_images_are_dropped(planted: dict[str, Path]):
    datamodule = _datamodule(planted)
    split_of = _split_of(datamodule)
    samples = datamodule.external_samples.set_index("Id")
    assert list(datamodule.external_samples.columns) == ["root", "Id", "status", "reason"]
    assert len(samples) == 20 + len(EXTERNAL_COPIES) + 1
    assert (samples.root == str(planted["external"])).all()

    for external_id, row in samples.iterrows():
        if external_id == BAD_ID:
            assert row.status == "dropped" and row.reason.startswith("bad image")
        elif external_id.startswith("ext-"):
            source = external_id.removeprefix("ext-")
            if split_of[source] == "train":
                assert row.status == "used" and row.reason == ""
            else:
                assert row.status == "dropped"
                assert row.reason.startswith(f"duplicate of {split_of[source]} image {source}")
        else:  # distinct images
            assert row.status == "used"
    dropped_as_duplicates = samples.reason.str.startswith("duplicate").sum()
    assert 0 < dropped_as_duplicates < len(EXTERNAL_COPIES)

    used = set(samples.index[samples.status == "used"])
    train_ids = set(datamodule.datasets["train"].ids.tolist())
    root_train = {i for i, split in split_of.items() if split == "train"}
    assert train_ids == root_train | used
    for name in ("val", "test"):  # evaluation images are data.root's only
        assert set(datamodule.datasets[name].ids.tolist()) <= set(split_of)


def test_the_leak_report_counts_the_pairs_of_each_pair_of_splits(planted: dict[str, Path]):
    datamodule = _datamodule(planted)
    root_ids, labels = read_labels_csv(planted["root"] / "train.csv", HPA2018)
    ignoring = dict(zip(root_ids, train_val_test_split(labels, (0.7, 0.15, 0.15)), strict=True))
    this_run = _split_of(datamodule)
    used = set(datamodule.external_samples.Id[datamodule.external_samples.status == "used"])

    def pair_name(a: str, b: str) -> str:
        order = ("external", "train", "val", "test")
        return "-".join(sorted((a, b), key=order.index))

    expected = {"ignoring_duplicates": dict.fromkeys(REPORT_ROWS, 0)}
    expected["this_run"] = dict.fromkeys(REPORT_ROWS, 0)
    for row in ROOT_COPIES:
        original, copy = root_ids[row], f"dup-{root_ids[row]}"
        expected["ignoring_duplicates"][pair_name(ignoring[original], ignoring[copy])] += 1
        expected["this_run"][pair_name(this_run[original], this_run[copy])] += 1
    for row in EXTERNAL_COPIES:
        original = root_ids[row]
        expected["ignoring_duplicates"][pair_name("external", ignoring[original])] += 1
        if f"ext-{original}" in used:
            expected["this_run"][pair_name("external", this_run[original])] += 1

    report = datamodule.leak_report.set_index("splits")
    assert list(report.index) == list(REPORT_ROWS)
    for column in ("ignoring_duplicates", "this_run"):
        assert report[column].to_dict() == expected[column], column
    assert report.loc[sorted(LEAKS), "this_run"].sum() == 0
    assert report.loc[sorted(LEAKS), "ignoring_duplicates"].sum() > 0  # the planting leaked
    assert report.leak.to_dict() == {name: name in LEAKS for name in REPORT_ROWS}


def test_with_duplicates_disabled_every_readable_external_image_is_used(
    planted: dict[str, Path],
):
    datamodule = _datamodule(planted, duplicates={"enabled": False})
    assert datamodule.leak_report is None and datamodule.root_pairs is None
    root_ids, labels = read_labels_csv(planted["root"] / "train.csv", HPA2018)
    np.testing.assert_array_equal(
        datamodule.split_table[1], train_val_test_split(labels, (0.7, 0.15, 0.15))
    )
    statuses = datamodule.external_samples.set_index("Id").status
    assert statuses[BAD_ID] == "dropped"
    assert (statuses.drop(BAD_ID) == "used").all()


def test_ids_shared_by_two_roots_are_refused(planted: dict[str, Path], tmp_path: Path):
    clash = tmp_path / "clash"
    root_table = pd.read_csv(planted["root"] / "train.csv", dtype=str)
    shutil.copytree(planted["root"] / "train", clash / "train")
    root_table.iloc[:3].to_csv(clash / "train.csv", index=False)
    with pytest.raises(HPAInputError, match="unique across") as error:
        _datamodule(planted, external=[clash])
    assert str(clash / "train.csv") in str(error.value)
    assert root_table.Id[0] in str(error.value)
    with pytest.raises(HPAInputError, match="also in"):
        _datamodule(planted, external=[planted["external"], planted["external"]])


def test_evaluation_does_not_read_the_external_roots(planted: dict[str, Path], tmp_path: Path):
    config = {
        "root": planted["root"],
        "external": [tmp_path / "gone"],
        "image_size": SIZE,
        "num_workers": 0,
    }
    evaluation = HPADataModule.from_config(config, HPA2018)
    evaluation.setup("test")
    assert len(evaluation.datasets["test"]) > 0 and evaluation.external == []
    with pytest.raises(HPAInputError, match="gone"):
        HPADataModule.from_config(config, HPA2018).setup("fit")


def test_external_images_come_from_their_own_cache_whichever_are_dropped(
    planted: dict[str, Path],
):
    first = _datamodule(planted, num_folds=3, fold=0, cache=True)
    cache_file = planted["external"] / "cache" / f"train-s{SIZE}.npy"
    built_at = cache_file.stat().st_mtime_ns
    second = _datamodule(planted, num_folds=3, fold=1, cache=True)
    assert cache_file.stat().st_mtime_ns == built_at  # reused, not rebuilt for another fold

    for datamodule in (first, second):
        train = datamodule.datasets["train"]
        for index in (0, len(train) - 1):  # a data.root image and an external one
            image_dir = planted["external" if index else "root"] / "train"
            expected = read_sample(image_dir, train.ids[index], SIZE)
            np.testing.assert_array_equal(train.read_image(index), expected)


def test_oversampled_batches_draw_external_images(planted: dict[str, Path]):
    datamodule = _datamodule(planted, oversample=True)
    datamodule.trainer = None
    train = datamodule.datasets["train"]
    external_indices = [i for i, sample_id in enumerate(train.ids) if sample_id.startswith("ext")]
    loader = datamodule.train_dataloader()
    loader.sampler.set_epoch(0)
    drawn = torch.cat([batch["index"] for batch in loader])
    assert len(drawn) == len(loader) * 8 and len(external_indices) > 0
    assert np.isin(drawn.numpy(), external_indices).any()
    batch = next(iter(loader))
    assert batch["image"].shape == (8, 4, SIZE, SIZE)


@pytest.fixture(scope="module")
def debug_run(planted: dict[str, Path], tmp_path_factory) -> Path:
    """The run directory of ``python -m hpa.train debug=fast`` with the external root."""
    run_dir = tmp_path_factory.mktemp("debug_run") / "run"
    result = run_module(
        "hpa.train",
        f"hydra.run.dir={run_dir}",
        "debug=fast",
        "model=cnn",
        "data=hpa",
        f"data.root={planted['root']}",
        f"data.external=[{planted['external']}]",
        "data.on_bad_image=skip",
        f"data.image_size={SIZE}",
        "data.batch_size=8",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return run_dir


def test_a_debug_run_with_external_data_writes_the_leak_report_and_external_list(
    planted: dict[str, Path], debug_run: Path
):
    report = pd.read_csv(debug_run / RunDir.LEAK_REPORT).set_index("splits")
    assert list(report.index) == list(REPORT_ROWS)
    assert report.loc[sorted(LEAKS), "this_run"].sum() == 0
    assert report.loc[sorted(LEAKS), "ignoring_duplicates"].sum() > 0
    samples = pd.read_csv(debug_run / RunDir.EXTERNAL_SAMPLES, keep_default_na=False)
    assert len(samples) == 20 + len(EXTERNAL_COPIES) + 1
    assert set(samples.status) == {"used", "dropped"}
    split = pd.read_csv(debug_run / "split.csv")
    assert len(split) == 120 + len(ROOT_COPIES)  # data.root's rows only
    log = (debug_run / "train.log").read_text()
    num_used = int((samples.status == "used").sum())
    assert f"external data {planted['external']}: {len(samples)} images, {num_used} used" in log
    assert "duplicate pairs per pair of splits" in log


@pytest.mark.slow
def test_eval_of_a_run_with_external_data_tests_on_the_data_root_test_split(
    debug_run: Path, tmp_path: Path
):
    evaluated = run_module(
        "hpa.eval",
        f"ckpt_path={debug_run / 'checkpoints' / 'best.ckpt'}",
        f"hydra.run.dir={tmp_path / 'eval'}",
    )
    assert evaluated.returncode == 0, evaluated.stdout[-3000:] + evaluated.stderr[-3000:]
    split = pd.read_csv(debug_run / "split.csv")
    predictions = pd.read_csv(tmp_path / "eval" / "test_predictions.csv")
    assert set(predictions.Id) == set(split.Id[split.split == "test"])
    evaluated_metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert 0.0 <= evaluated_metrics[TEST_F1_MACRO] <= 1.0
