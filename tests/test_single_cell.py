"""The 2021 task end to end: `hpa-train experiment=single_cell` on a tiny synthetic cell set
scores cells against their truth, and `hpa-predict` on its checkpoint writes Kaggle's 2021
submission, checked with pycocotools and with our own RLE decoder."""

from __future__ import annotations

import base64
import shutil
import zlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from cli import compose_entry, run_module
from pycocotools import mask as coco_mask

from hpa.core.errors import HPAInputError
from hpa.core.labels import HPA2021
from hpa.core.metric_names import TEST_CELL_MAP, TEST_CELL_MATCH_RATE
from hpa.core.run_dir import RunDir
from hpa.evaluation.rle import decode_coco_rle_counts
from hpa.run.predicting import predict
from hpa.run.training import train

TINY_CELL_SET = (
    "experiment=single_cell",
    "cells=cam",  # the class-activation path end to end (broadcast: the experiment's default)
    "data.synthetic_cells.num_train=60",
    "data.synthetic_cells.num_test=4",
    "data.image_size=64",
    "data.batch_size=16",
    "data.num_workers=0",
    "data.segment_processes=1",
    "trainer.max_epochs=1",
    "report=false",
)


@pytest.fixture(scope="module")
def single_cell_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunDir, Path]:
    """(run, data root) of one tiny single-cell run (cells=cam: maps of the dilated model)."""
    base = tmp_path_factory.mktemp("single_cell")
    result = run_module(
        "hpa.train", *TINY_CELL_SET, f"hydra.run.dir={base / 'run'}", f"paths.data_dir={base}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return RunDir(base / "run"), next(base.glob("synthetic-cells-*"))


def test_a_single_cell_run_scores_cells_against_their_truth(single_cell_run) -> None:
    run, root = single_cell_run
    assert run.label_set() == HPA2021
    run_metrics = run.metrics()
    assert 0.0 <= run_metrics[TEST_CELL_MAP] <= 1.0
    # the watershed finds the synthetic cells (the issue asks for 85% on the synthetic sets)
    assert run_metrics[TEST_CELL_MATCH_RATE] >= 0.85
    ap = run.test_cell_ap()
    assert list(ap["class_name"]) == list(HPA2021.class_names)
    scored = ap.dropna(subset=["ap"])
    assert np.isclose(scored["ap"].mean(), run_metrics[TEST_CELL_MAP])
    for row in scored.itertuples():
        assert run_metrics[f"test/cell_ap/{HPA2021.slug(row.class_id)}"] == pytest.approx(row.ap)

    cells = run.test_cells()
    test_ids = set(run.test_ids())
    assert set(cells["ID"]) == test_ids
    assert list(cells.columns) == ["ID", "cell_id", *HPA2021.class_names]
    assert run.cells_info()["method"] == "cam"
    assert run.cells_info()["output_stride"] == 8  # conf/cells/cam.yaml


def _own_decode(text: str, height: int, width: int) -> np.ndarray:
    return decode_coco_rle_counts(zlib.decompress(base64.b64decode(text)), height, width)


def test_predict_writes_the_2021_submission_that_pycocotools_decodes(single_cell_run, tmp_path):
    run, root = single_cell_run
    predict(
        compose_entry(
            "predict", [f"ckpt_path={run.best_checkpoint}", f"data.root={root}"], tmp_path
        )
    )
    submission = pd.read_csv(tmp_path / RunDir.SUBMISSION, dtype=str, keep_default_na=False)
    sample = pd.read_csv(root / "sample_submission.csv", dtype=str, keep_default_na=False)
    assert list(submission.columns) == ["ID", "ImageWidth", "ImageHeight", "PredictionString"]
    assert list(submission["ID"]) == list(sample["ID"])
    for row in submission.itertuples():
        height, width = int(row.ImageHeight), int(row.ImageWidth)
        image = cv2.imread(str(root / "test" / f"{row.ID}_green.png"), cv2.IMREAD_UNCHANGED)
        assert image.shape == (height, width)
        tokens = row.PredictionString.split()
        assert tokens and len(tokens) % 3 == 0
        for class_id, confidence, text in zip(tokens[::3], tokens[1::3], tokens[2::3], strict=True):
            assert 0 <= int(class_id) < HPA2021.num_classes and 0 <= float(confidence) <= 1
            counts = zlib.decompress(base64.b64decode(text))
            decoded = coco_mask.decode({"size": [height, width], "counts": counts})
            assert decoded.shape == (height, width) and decoded.any()
            np.testing.assert_array_equal(decoded, _own_decode(text, height, width))


def test_broadcast_gives_every_cell_its_images_scores(single_cell_run, tmp_path) -> None:
    run, root = single_cell_run
    cfg = compose_entry(
        "predict",
        [f"ckpt_path={run.best_checkpoint}", f"data.root={root}", "cells=broadcast"],
        tmp_path,
    )
    submission = predict(cfg)
    for text in submission["PredictionString"]:
        tokens = text.split()
        by_class = {}
        for class_id, confidence in zip(tokens[::3], tokens[1::3], strict=True):
            by_class.setdefault(class_id, set()).add(confidence)
        # every cell of an image has the image's probability of each class
        assert all(len(confidences) == 1 for confidences in by_class.values())


def test_a_sample_row_without_its_images_is_refused(single_cell_run, tmp_path) -> None:
    run, root = single_cell_run
    bad_root = tmp_path / "bad"
    shutil.copytree(root / "test", bad_root / "test")
    sample = pd.read_csv(root / "sample_submission.csv", dtype=str, keep_default_na=False)
    missing = sample.loc[1, "ID"]
    (bad_root / "test" / f"{missing}_yellow.png").unlink()
    sample.to_csv(bad_root / "sample_submission.csv", index=False)
    cfg = compose_entry(
        "predict", [f"ckpt_path={run.best_checkpoint}", f"data.root={bad_root}"], tmp_path / "p"
    )
    with pytest.raises(HPAInputError, match=f"{missing}.*yellow|yellow.*{missing}"):
        predict(cfg)
    assert not (tmp_path / "p" / RunDir.SUBMISSION).exists()


def test_a_label_outside_the_19_classes_is_refused_with_its_row(single_cell_run, tmp_path):
    run, root = single_cell_run
    bad_root = tmp_path / "bad"
    bad_root.mkdir()
    (bad_root / "train").symlink_to(root / "train")
    table = pd.read_csv(root / "train.csv", dtype=str)
    table.loc[3, "Label"] = "0|19"
    table.to_csv(bad_root / "train.csv", index=False)
    real_layout = [o for o in TINY_CELL_SET if not o.startswith("data.synthetic_cells.")]
    cfg = compose_entry("train", [*real_layout, "data=hpa2021", f"data.root={bad_root}"], tmp_path)
    with pytest.raises(HPAInputError, match="class id 19 is outside 0..18") as refused:
        train(cfg)
    assert str(bad_root / "train.csv") in str(refused.value)
    assert not (tmp_path / "checkpoints").exists()  # stopped before any training
