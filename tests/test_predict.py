"""`python -m hpa.predict` writes a valid Kaggle submission for a generated test folder, with the
torch backend (checkpoints) and the onnx backend (models exported by `python -m hpa.export`)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from cli import REPO, run_module
from shared_data import hpa2018_dir

from hpa.core.errors import HPAInputError
from hpa.core.labels import CHANNELS, HPA2018
from hpa.core.run_dir import RunDir
from hpa.data.reader import read_sample, tint
from hpa.evaluation.thresholds import binarize
from hpa.integrations.onnx_runtime import OnnxPredictor
from hpa.models.checkpoints import load_module
from hpa.run.predicting import model_paths

SHARED = hpa2018_dir()  # the real competition files, when this machine has them


@pytest.fixture(scope="module")
def trained(small_trained_run) -> tuple[Path, Path]:
    """(best checkpoint, data root with test/ and sample_submission.csv): conftest.py's smoke run
    of the seed CNN, shared with the tests of hpa.explain and hpa.export."""
    return small_trained_run


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
    assert all(HPA2018.parse(value).sum() >= 1 for value in submission["Predicted"])
    assert list(probabilities.columns) == ["Id", *HPA2018.class_names]
    values = probabilities[list(HPA2018.class_names)].to_numpy()
    assert ((values >= 0) & (values <= 1)).all()
    if (SHARED / "sample_submission.csv").is_file():  # the real competition format
        real = pd.read_csv(SHARED / "sample_submission.csv", nrows=3, dtype=str)
        assert list(real.columns) == list(submission.columns)


@pytest.mark.slow
def test_an_ensemble_of_one_model_twice_equals_the_model(trained, tmp_path: Path):
    checkpoint, data_root = trained
    single, double = tmp_path / "single", tmp_path / "double"
    assert predict(checkpoint, data_root, single).returncode == 0
    result = predict(f"[{checkpoint},{checkpoint}]", data_root, double)
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = read_output(single)[1], read_output(double)[1]
    np.testing.assert_allclose(
        one[list(HPA2018.class_names)], two[list(HPA2018.class_names)], atol=1e-6
    )


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
    assert all(HPA2018.parse(value).sum() >= 1 for value in others)
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
    assert all(HPA2018.parse(value).sum() >= 1 for value in submission["Predicted"])
    assert probabilities[list(HPA2018.class_names)].notna().all().all()


def test_the_submission_is_the_checkpoints_decisions_on_every_test_image(trained, tmp_path: Path):
    """Trainer.predict with its writer gives, row for row, what the loaded model computes on
    each test image by hand, decided by the one decision rule at its stored thresholds. The run
    trained on 64 px crops of images read at 80 px (the defaults' 1.25 x): each test image is
    read at 80 px and its centre 64 px crop scored."""
    checkpoint, data_root = trained
    assert RunDir.of_checkpoint(checkpoint).load_size() == 80
    assert predict(checkpoint, data_root, tmp_path).returncode == 0
    submission, probabilities = read_output(tmp_path)

    model = load_module(checkpoint).eval()
    ids = submission["Id"].tolist()
    read = np.stack([read_sample(data_root / "test", sample_id, 80) for sample_id in ids])
    images = torch.from_numpy(np.ascontiguousarray(read[..., 8:72, 8:72]))
    with torch.inference_mode():
        expected = model.probabilities(images).numpy()
    np.testing.assert_allclose(probabilities[list(HPA2018.class_names)], expected, atol=1e-5)
    decisions = binarize(expected, model.class_thresholds.numpy(), model.hparams.ensure_one_label)
    assert submission["Predicted"].tolist() == [HPA2018.format(row) for row in decisions]


# ---------------------------------------------------------------------------------------------
# backend=onnx: the model exported by hpa-export, predicted with onnxruntime alone
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory) -> Path:
    """The small run's checkpoint exported by `python -m hpa.export`."""
    checkpoint, _ = trained
    output = tmp_path_factory.mktemp("export") / "small.onnx"
    result = run_module(
        "hpa.export",
        f"ckpt_path={checkpoint}",
        f"output={output}",
        f"hydra.run.dir={output.parent / 'run'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return output


def test_onnx_backend_writes_the_submission_of_the_torch_backend(trained, exported, tmp_path):
    """The run trained on 64 px crops of 80 px reads: the file says so, and both backends score
    the centre 64 px crop of each test image read at 80 px."""
    checkpoint, data_root = trained
    exported_file = OnnxPredictor(exported)
    assert (exported_file.image_size, exported_file.load_size) == (64, 80)
    assert predict(checkpoint, data_root, tmp_path / "torch", "tta=flips").returncode == 0
    result = predict(exported, data_root, tmp_path / "onnx", "tta=flips")  # backend from suffix
    assert result.returncode == 0, result.stderr[-3000:]
    assert "backend=onnx" in result.stdout + result.stderr

    torch_submission, torch_probabilities = read_output(tmp_path / "torch")
    onnx_submission, onnx_probabilities = read_output(tmp_path / "onnx")
    pd.testing.assert_frame_equal(onnx_submission, torch_submission)
    assert list(onnx_probabilities["Id"]) == list(torch_probabilities["Id"])
    np.testing.assert_allclose(
        onnx_probabilities[list(HPA2018.class_names)],
        torch_probabilities[list(HPA2018.class_names)],
        atol=1e-5,
    )


NO_TRAINING_STACK = """
import runpy, sys

ABSENT = ("torch", "torchvision", "pytorch_lightning", "lightning", "lightning_fabric", "timm",
          "torchmetrics", "albumentations", "matplotlib", "sklearn", "wandb")
for name in ABSENT:
    sys.modules[name] = None  # `import name` now fails as if it were not installed
sys.argv = ["hpa.predict", *sys.argv[1:]]
try:
    runpy.run_module("hpa.predict", run_name="__main__", alter_sys=True)
except SystemExit as stop:
    assert stop.code in (None, 0), stop.code
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ABSENT and sys.modules[m] is not None)
assert not loaded, loaded
print("predicted without", ", ".join(ABSENT))
"""


def test_onnx_backend_runs_without_torch_lightning_or_timm(trained, exported, tmp_path):
    _, data_root = trained
    command = [
        sys.executable,
        "-c",
        NO_TRAINING_STACK,
        f"ckpt_path={exported}",
        f"data.root={data_root}",
        f"hydra.run.dir={tmp_path / 'onnx'}",
        "backend=onnx",
        "tta=dihedral",
        "data.cache=false",  # images decoded by hpa.data.reader
    ]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "predicted without torch" in result.stdout
    submission, probabilities = read_output(tmp_path / "onnx")
    template = pd.read_csv(data_root / "sample_submission.csv", dtype=str)
    assert list(submission["Id"]) == list(template["Id"])
    assert all(HPA2018.parse(value).sum() >= 1 for value in submission["Predicted"])

    # the same as the torch backend, with the 8 symmetries and the images decoded alike
    checkpoint, _ = trained
    torch_run = predict(
        checkpoint, data_root, tmp_path / "torch", "tta=dihedral", "data.cache=false"
    )
    assert torch_run.returncode == 0, torch_run.stderr[-3000:]
    pd.testing.assert_frame_equal(submission, read_output(tmp_path / "torch")[0])


def test_an_ensemble_of_one_onnx_model_twice_equals_the_model(trained, exported, tmp_path):
    _, data_root = trained
    assert predict(exported, data_root, tmp_path / "single").returncode == 0
    result = predict(f"[{exported},{exported}]", data_root, tmp_path / "double")
    assert result.returncode == 0, result.stderr[-3000:]
    single, double = read_output(tmp_path / "single")[1], read_output(tmp_path / "double")[1]
    np.testing.assert_allclose(
        single[list(HPA2018.class_names)], double[list(HPA2018.class_names)], atol=1e-7
    )


def test_backend_and_model_files_must_agree(trained, exported, tmp_path):
    checkpoint, data_root = trained
    result = predict(checkpoint, data_root, tmp_path / "out", "backend=onnx")
    assert result.returncode == 2
    assert f"{checkpoint} is not an .onnx file" in result.stdout + result.stderr
    with pytest.raises(HPAInputError, match=rf"{exported} is an ONNX model.*backend=onnx"):
        model_paths(str(exported), "torch")
    with pytest.raises(HPAInputError, match="backend='tensorrt'"):
        model_paths(str(checkpoint), "tensorrt")
    with pytest.raises(HPAInputError, match=r"ONNX model .*missing.onnx does not exist"):
        model_paths(str(tmp_path / "missing.onnx"))
    with pytest.raises(HPAInputError, match=r"no model.onnx under"):
        model_paths(str(tmp_path), "onnx")
    # a folder of exports: every model.onnx in it
    (tmp_path / "fold0").mkdir()
    shutil.copy(exported, tmp_path / "fold0" / "model.onnx")
    assert model_paths(str(tmp_path), "onnx") == ("onnx", [tmp_path / "fold0" / "model.onnx"])


def test_an_onnx_model_refuses_another_image_size(trained, exported, tmp_path):
    _, data_root = trained
    result = predict(exported, data_root, tmp_path / "out", "data.image_size=128")
    assert result.returncode == 2
    assert "takes 64 px images only" in result.stdout + result.stderr
