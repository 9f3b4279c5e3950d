"""The cell methods beyond broadcast and cam, each one override, end to end on a tiny synthetic
cell set: a cell-crop model (``cells=crops``) with the label-following cell augmentations,
multiple-instance bags (``data.crops.bag_size``, ``model.mil_pooling``), pseudo-labels of a
first run in a second stage, and Puzzle-CAM's map consistency (``model.map_consistency``).

The runs share one data root, so the set is generated and segmented once."""

from __future__ import annotations

import base64
import json
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli import compose_entry, run_module
from pycocotools import mask as coco_mask

from hpa.core.errors import HPAInputError
from hpa.core.labels import HPA2021
from hpa.core.metric_names import TEST_CELL_MAP
from hpa.core.run_dir import RunDir
from hpa.data.cell_crop_datamodule import CellCropDataModule
from hpa.run import builders
from hpa.run.cell_ensembling import ensemble_cells
from hpa.run.predicting import predict

TINY_CELL_SET = (
    "experiment=single_cell",
    "data.synthetic_cells.num_train=40",
    "data.synthetic_cells.num_test=3",
    "data.synthetic_cells.sizes=[128,160]",
    "data.batch_size=16",
    "data.num_workers=0",
    "data.segment_processes=1",
    "trainer.max_epochs=1",
    "report=false",
)
CROPS = ("cells=crops", "data.crops.size=32")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cell_methods_data")


def _train(overrides: list[str], data_dir: Path, run_dir: Path) -> RunDir:
    result = run_module(
        "hpa.train",
        *TINY_CELL_SET,
        *overrides,
        f"paths.data_dir={data_dir}",
        f"hydra.run.dir={run_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return RunDir(run_dir)


@pytest.fixture(scope="module")
def crops_run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    """A crop model trained with all three cell augmentations, scoring train, val and test."""
    return _train(
        [
            *CROPS,
            "cells.score_splits=[train,val,test]",
            "data.crops.augment.negative=0.2",
            "data.crops.augment.microtubules=0.1",
            "data.crops.augment.endoplasmic_reticulum=0.1",
        ],
        data_dir,
        tmp_path_factory.mktemp("crops") / "run",
    )


def test_a_crop_model_scores_each_cell_on_its_own_crop(crops_run: RunDir) -> None:
    metrics = crops_run.metrics()
    for split in ("val", "test"):
        assert 0.0 <= metrics[f"{split}/cell_map"] <= 1.0
    assert crops_run.cells_info()["method"] == "crops"
    assert crops_run.config().data.crops.size == 32
    train_cells = pd.read_csv(crops_run.split_cells_path("train"), dtype={"ID": str})
    assert list(train_cells.columns) == ["ID", "cell_id", *HPA2021.class_names]
    split = pd.read_csv(crops_run.split_file, dtype=str)
    assert set(train_cells["ID"]) <= set(split.loc[split["split"] == "train"].iloc[:, 0])
    scores = train_cells[list(HPA2021.class_names)].to_numpy()
    assert ((scores >= 0) & (scores <= 1)).all()
    # cells of one image differ: the scores are the cells' own, not a copy of the image's
    spread = train_cells.groupby("ID")[list(HPA2021.class_names)].std().fillna(0).to_numpy()
    assert spread.max() > 0


def test_predict_with_a_crop_model_writes_the_2021_submission(
    crops_run: RunDir, data_dir: Path, tmp_path: Path
) -> None:
    root = next(data_dir.glob("synthetic-cells-*"))
    cfg = compose_entry(
        "predict", [f"ckpt_path={crops_run.best_checkpoint}", f"data.root={root}"], tmp_path
    )
    submission = predict(cfg)
    sample = pd.read_csv(root / "sample_submission.csv", dtype=str, keep_default_na=False)
    assert list(submission["ID"]) == list(sample["ID"])
    row = submission.iloc[0]
    tokens = row.PredictionString.split()
    assert tokens and len(tokens) % 3 == 0
    height, width = int(row.ImageHeight), int(row.ImageWidth)
    decoded = coco_mask.decode(
        {"size": [height, width], "counts": zlib.decompress(base64.b64decode(tokens[2]))}
    )
    assert decoded.shape == (height, width) and decoded.any()


def test_pseudo_labels_of_a_first_run_are_the_soft_targets_of_the_train_cells(
    crops_run: RunDir, data_dir: Path, tmp_path: Path
) -> None:
    pseudo_labels = crops_run.split_cells_path("train")
    overrides = [
        *CROPS,
        f"data.crops.pseudo_labels={pseudo_labels}",
        f"model.init_from={crops_run.best_checkpoint}",
    ]
    cfg = compose_entry(
        "train", [*TINY_CELL_SET, *overrides, f"paths.data_dir={data_dir}"], tmp_path
    )
    datamodule = builders.build_datamodule(cfg)
    assert isinstance(datamodule, CellCropDataModule)
    datamodule.prepare_data()
    datamodule.setup("fit")
    crops = datamodule.datasets["train"]
    first = pd.read_csv(pseudo_labels, dtype={"ID": str}).set_index(["ID", "cell_id"])
    image_labels = datamodule.image_dataset("train").labels[crops.image_rows]
    expected = first.loc[list(zip(crops.image_ids[crops.image_rows], crops.cell_ids, strict=True))]
    np.testing.assert_allclose(
        crops.labels, expected[list(HPA2021.class_names)].to_numpy() * image_labels, atol=1e-6
    )
    assert ((crops.labels > 0) & (crops.labels < 1)).any()  # soft, not the image's 0/1 labels


@pytest.mark.slow
def test_pseudo_labels_of_a_first_run_train_a_second_stage(
    crops_run: RunDir, data_dir: Path, tmp_path: Path
):
    overrides = [
        *CROPS,
        f"data.crops.pseudo_labels={crops_run.split_cells_path('train')}",
        f"model.init_from={crops_run.best_checkpoint}",
    ]
    second = _train(overrides, data_dir, tmp_path / "second")
    assert 0.0 <= second.metrics()[TEST_CELL_MAP] <= 1.0
    assert second.config().model.init_from == str(crops_run.best_checkpoint)


def test_pseudo_labels_missing_a_cell_are_refused_naming_it(
    crops_run: RunDir, data_dir: Path, tmp_path: Path
) -> None:
    table = pd.read_csv(crops_run.split_cells_path("train"), dtype={"ID": str})
    short = tmp_path / "short.csv"
    table.iloc[1:].to_csv(short, index=False)
    cfg = compose_entry(
        "train",
        [*TINY_CELL_SET, *CROPS, f"data.crops.pseudo_labels={short}", f"paths.data_dir={data_dir}"],
        tmp_path / "run",
    )
    datamodule = builders.build_datamodule(cfg)
    datamodule.prepare_data()
    first = table.iloc[0]
    with pytest.raises(HPAInputError, match=f"short.csv.*{first.ID} cell {first.cell_id}"):
        datamodule.setup("fit")


@pytest.mark.slow
@pytest.mark.parametrize("pooling", ["max", "attention"])
def test_bags_of_cells_train_with_multiple_instance_pooling(
    pooling: str, data_dir: Path, tmp_path: Path
) -> None:
    run = _train(
        [*CROPS, "data.crops.bag_size=4", f"model.mil_pooling={pooling}"], data_dir, tmp_path
    )
    assert 0.0 <= run.metrics()[TEST_CELL_MAP] <= 1.0
    assert run.config().model.mil_pooling == pooling


@pytest.fixture(scope="module")
def puzzle_run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    """An image model trained with Puzzle-CAM's map consistency, its cells scored by cam."""
    return _train(
        [
            "cells=cam",
            "data.image_size=64",
            "model.map_consistency=1.0",
            "cells.score_splits=[val,test]",
        ],
        data_dir,
        tmp_path_factory.mktemp("puzzle") / "run",
    )


def test_puzzle_cam_trains_the_image_model_for_sharper_maps(puzzle_run: RunDir) -> None:
    assert 0.0 <= puzzle_run.metrics()[TEST_CELL_MAP] <= 1.0
    logged = pd.read_csv(next((puzzle_run.path / "csv").rglob("metrics.csv")))
    assert logged.filter(like="puzzle").notna().any().any()


def test_an_ensemble_of_image_and_crop_scores_takes_its_weights_from_validation(
    puzzle_run: RunDir, crops_run: RunDir, tmp_path: Path
) -> None:
    cfg = compose_entry(
        "ensemble_cells", [f"members=[{puzzle_run.path},{crops_run.path}]", "step=0.25"], tmp_path
    )
    metrics = ensemble_cells(cfg)
    info = json.loads((tmp_path / "cell_ensemble.json").read_text())
    weights = [member["weight"] for member in info["members"]]
    assert sum(weights) == pytest.approx(1.0)
    assert [member["method"] for member in info["members"]] == ["cam", "crops"]
    tried = pd.read_csv(tmp_path / "ensemble_weights.csv")
    assert len(tried) == 5  # 0, 0.25 ... 1 for the first member
    assert metrics["val/cell_map"] == pytest.approx(tried["score"].max())
    # the chosen weights score at least as well on validation as either member alone
    assert metrics["val/cell_map"] >= max(m["val_cell_map"] for m in info["members"]) - 1e-9
    assert 0.0 <= metrics["test/cell_map"] <= 1.0
    test_cells = RunDir(tmp_path).test_cells()
    assert len(test_cells) == len(crops_run.test_cells())
