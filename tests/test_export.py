"""`python -m hpa.export`: a checkpoint as an ONNX model with its thresholds and config."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from cli import compose_entry, run_module

from hpa.core.errors import HPAInputError
from hpa.core.labels import HPA2018
from hpa.core.run_dir import RunDir
from hpa.integrations.onnx_runtime import IMAGE_SIZE_KEY, TRAIN_CONFIG_KEY, OnnxPredictor
from hpa.models.checkpoints import load_module
from hpa.run.exporting import export


def export_in_process(checkpoint: Path | str, output_dir: Path, *overrides: str) -> Path:
    return export(compose_entry("export", [f"ckpt_path={checkpoint}", *overrides], output_dir))


def test_cli_writes_model_onnx_into_its_run_directory(small_trained_run, tmp_path: Path):
    checkpoint, _ = small_trained_run
    result = run_module("hpa.export", f"ckpt_path={checkpoint}", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    path = RunDir(tmp_path).onnx_model
    assert path == tmp_path / "model.onnx" and path.is_file()

    # the parity check ran on the run's test images and noise, and says by how much they differ
    output = result.stdout + result.stderr
    trained_in = RunDir.of_checkpoint(checkpoint)
    num_test = min(16, len(trained_in.test_ids()))
    assert f"on {num_test} test and 4 random images" in output
    assert "max |onnxruntime - torch| probability" in output

    module = load_module(checkpoint).eval()
    predictor = OnnxPredictor(path)
    assert predictor.class_names == list(HPA2018.class_names)
    np.testing.assert_array_equal(predictor.thresholds, module.class_thresholds.numpy())
    assert predictor.image_size == 64 and predictor.model_name == "seed_cnn"
    assert predictor.train_config == (trained_in.path / RunDir.CONFIG).read_text()
    properties = {prop.key: prop.value for prop in onnx.load(path).metadata_props}
    assert json.loads(properties[IMAGE_SIZE_KEY]) == 64
    assert "model:" in properties[TRAIN_CONFIG_KEY]

    images = np.random.default_rng(0).integers(0, 256, (3, 4, 64, 64), dtype=np.uint8)
    with torch.inference_mode():
        expected = torch.sigmoid(module(torch.from_numpy(images))).numpy()
    np.testing.assert_allclose(predictor.probabilities(images), expected, atol=1e-5)


def test_output_path_and_a_checkpoint_away_from_its_run(small_trained_run, tmp_path: Path):
    checkpoint, _ = small_trained_run
    moved = tmp_path / "moved.ckpt"
    shutil.copy(checkpoint, moved)
    with pytest.raises(HPAInputError, match=r"image size of .*moved.ckpt is unknown.*image_size"):
        export_in_process(moved, tmp_path / "run")
    output = tmp_path / "models" / "seed.onnx"
    written = export_in_process(moved, tmp_path / "run", f"output={output}", "image_size=64")
    assert written == output and output.is_file()
    assert OnnxPredictor(output).train_config == ""  # no run config to store
    assert not (tmp_path / "run" / "model.onnx").exists()
    # no run, no test images: the parity check ran on random images only, and says so
    check = json.loads((tmp_path / "run" / RunDir.EXPORT_CHECK).read_text())
    assert check["test_images"] == 0 and check["random_images"] > 0
    assert "data root" in check["random_only_because"]


def test_bad_input_and_failed_parity_write_nothing(small_trained_run, tmp_path):
    checkpoint, _ = small_trained_run
    refusals = {
        "format=tflite": r"format='tflite': choose one of onnx",
        "tolerance=0": r"refusing to write .*model.onnx: its probabilities differ",
    }
    for override, message in refusals.items():
        with pytest.raises(HPAInputError, match=message):
            export_in_process(checkpoint, tmp_path, override)
        assert list(tmp_path.iterdir()) == []


def test_several_checkpoints_are_refused(small_trained_run, tmp_path: Path):
    checkpoint, _ = small_trained_run
    with pytest.raises(HPAInputError, match="one checkpoint per file, got 2.*hpa-predict"):
        export_in_process(f"[{checkpoint},{checkpoint}]", tmp_path / "run")
    assert not (tmp_path / "run").exists()
