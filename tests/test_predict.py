"""`python -m hpa.predict` writes a valid Kaggle submission for a generated test folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from cli import REPO, SMALL_SYNTHETIC_SET, run_module

from hpa.data.reader import read_sample, tint
from hpa.evaluation.thresholds import binarize
from hpa.labels import CHANNELS, CLASS_NAMES, format_target, parse_target
from hpa.run.checkpoints import load_module

SHARED = REPO.parent / "shared" / "data" / "hpa2018"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(best checkpoint, data root with test/ and sample_submission.csv)."""
    root = tmp_path_factory.mktemp("predict")
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


def predict(checkpoint: object, data_root: Path, output: Path, *overrides: str):
    return run_module(
        "hpa.predict",
        f"ckpt_path={checkpoint}",
        f"data.root={data_root}",
        f"hydra.run.dir={output}",
        *overrides,
    )


def read_output(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    submission = pd.read_csv(folder / "submission.csv", dtype=str, keep_default_na=False)
    probabilities = pd.read_csv(folder / "probabilities.csv")
    return submission, probabilities


def test_submission_follows_the_sample_submission(trained, tmp_path: Path):
    checkpoint, data_root = trained
    result = predict(checkpoint, data_root, tmp_path, "tta=dihedral")
    assert result.returncode == 0, result.stderr[-3000:]
    submission, probabilities = read_output(tmp_path)
    template = pd.read_csv(data_root / "sample_submission.csv", dtype=str)
    assert list(submission.columns) == ["Id", "Predicted"]
    assert list(submission["Id"]) == list(template["Id"])
    assert all(parse_target(value).sum() >= 1 for value in submission["Predicted"])
    assert list(probabilities.columns) == ["Id", *CLASS_NAMES]
    values = probabilities[list(CLASS_NAMES)].to_numpy()
    assert ((values >= 0) & (values <= 1)).all()
    if (SHARED / "sample_submission.csv").is_file():  # the real competition format
        real = pd.read_csv(SHARED / "sample_submission.csv", nrows=3, dtype=str)
        assert list(real.columns) == list(submission.columns)


def test_an_ensemble_of_one_model_twice_equals_the_model(trained, tmp_path: Path):
    checkpoint, data_root = trained
    single, double = tmp_path / "single", tmp_path / "double"
    assert predict(checkpoint, data_root, single).returncode == 0
    result = predict(f"[{checkpoint},{checkpoint}]", data_root, double)
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = read_output(single)[1], read_output(double)[1]
    np.testing.assert_allclose(one[list(CLASS_NAMES)], two[list(CLASS_NAMES)], atol=1e-6)


def test_without_a_sample_submission_the_files_present_are_predicted(trained, tmp_path: Path):
    checkpoint, data_root = trained
    copy = tmp_path / "copy"
    shutil.copytree(data_root / "test", copy / "test")
    result = predict(checkpoint, copy, tmp_path / "out")
    assert result.returncode == 0, result.stderr[-3000:]
    submission, _ = read_output(tmp_path / "out")
    expected = sorted(
        p.name.removesuffix("_green.png") for p in (copy / "test").glob("*_green.png")
    )
    assert list(submission["Id"]) == expected


def test_a_missing_checkpoint_is_refused(tmp_path: Path):
    result = predict(tmp_path / "gone.ckpt", tmp_path, tmp_path / "out")
    assert result.returncode == 2
    assert "gone.ckpt" in result.stdout + result.stderr


def test_a_skipped_bad_image_keeps_its_row_with_no_class(trained, tmp_path: Path):
    checkpoint, source_root = trained
    data_root = tmp_path / "data"
    shutil.copytree(source_root, data_root, ignore=shutil.ignore_patterns("cache"))
    template = pd.read_csv(data_root / "sample_submission.csv", dtype=str)
    bad_id = template["Id"][1]
    next((data_root / "test").glob(f"{bad_id}_green.*")).write_bytes(b"")  # an empty file

    output = tmp_path / "out"
    result = predict(checkpoint, data_root, output, "data.on_bad_image=skip")
    assert result.returncode == 0, result.stderr[-3000:]
    submission, probabilities = read_output(output)
    assert list(submission["Id"]) == list(template["Id"])  # Kaggle's rows, all of them
    assert submission.set_index("Id")["Predicted"][bad_id] == ""
    others = submission[submission["Id"] != bad_id]["Predicted"]
    assert all(parse_target(value).sum() >= 1 for value in others)
    assert bad_id not in set(probabilities["Id"]) and len(probabilities) == len(template) - 1
    assert pd.read_csv(output / "skipped_images.csv")["Id"].tolist() == [bad_id]
    assert "empty Predicted" in result.stdout + result.stderr


def test_predicts_a_folder_of_hpas_tinted_jpgs(trained, real_channels_dir: Path, tmp_path: Path):
    """HPA's files as downloaded: one RGB jpg per stain, tinted in its colour, 2048 or 1728 px."""
    checkpoint, _ = trained
    image_dir = tmp_path / "data" / "test"
    image_dir.mkdir(parents=True)
    ids = ["10580_1610_C1_1", "10580_1610_C1_2", "1060_F3_3"]
    for index, (sample_id, side) in enumerate(zip(ids, (2048, 1728, 512), strict=True)):
        for color in CHANNELS:
            source = sorted(real_channels_dir.glob(f"*_{color}.png"))[index]
            stain = cv2.resize(cv2.imread(str(source), 0), (side, side))
            assert cv2.imwrite(str(image_dir / f"{sample_id}_{color}.jpg"), tint(stain, color))
    result = predict(checkpoint, tmp_path / "data", tmp_path / "out")
    assert result.returncode == 0, result.stderr[-3000:]
    submission, probabilities = read_output(tmp_path / "out")
    assert list(submission["Id"]) == sorted(ids)
    assert all(parse_target(value).sum() >= 1 for value in submission["Predicted"])
    assert probabilities[list(CLASS_NAMES)].notna().all().all()


def test_the_submission_is_the_checkpoints_decisions_on_every_test_image(trained, tmp_path: Path):
    """Trainer.predict with its writer gives, row for row, what the loaded model computes on
    each test image by hand, decided by the one decision rule at its stored thresholds."""
    checkpoint, data_root = trained
    assert predict(checkpoint, data_root, tmp_path).returncode == 0
    submission, probabilities = read_output(tmp_path)

    model = load_module(checkpoint).eval()
    ids = submission["Id"].tolist()
    images = torch.from_numpy(
        np.stack([read_sample(data_root / "test", sample_id, 64) for sample_id in ids])
    )
    with torch.inference_mode():
        expected = model.probabilities(images).numpy()
    np.testing.assert_allclose(probabilities[list(CLASS_NAMES)], expected, atol=1e-5)
    decisions = binarize(expected, model.class_thresholds.numpy(), model.hparams.ensure_one_label)
    assert submission["Predicted"].tolist() == [format_target(row) for row in decisions]
