"""ONNX export of HPAModules and prediction with onnxruntime alone (hpa.integrations)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from cli import REPO
from real_samples import real_rgby_samples
from torch import nn

from hpa.core.errors import HPAInputError
from hpa.core.labels import HPA2018
from hpa.integrations.onnx_export import (
    FixedSizeAdaptiveAvgPool2d,
    OnnxParityError,
    export_onnx,
)
from hpa.integrations.onnx_runtime import (
    CLASS_NAMES_KEY,
    TRAIN_CONFIG_KEY,
    OnnxPredictor,
)
from hpa.models.module import HPAModule

IMAGE_SIZE = 64
TRAIN_CONFIG = "model:\n  name: resnet18\ndata:\n  image_size: 64\n"


def random_module(name: str, seed: int = 0, ensure_one_label: bool = True) -> HPAModule:
    """Random weights, channel statistics and thresholds like a trained model's, in eval mode."""
    torch.manual_seed(seed)
    module = HPAModule(
        name,
        channels_last=name != "seed_cnn",  # as the model configs set it
        ensure_one_label=ensure_one_label,
        channel_mean=(0.08, 0.05, 0.05, 0.08),
        channel_std=(0.13, 0.09, 0.14, 0.13),
    )
    module.set_class_thresholds(np.linspace(0.3, 0.7, HPA2018.num_classes))
    return module.eval()


def torch_probabilities(module: HPAModule, images: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return torch.sigmoid(module(torch.from_numpy(images))).numpy()


@pytest.fixture(scope="module")
def real_images(real_channels_dir) -> np.ndarray:
    return real_rgby_samples(real_channels_dir, count=6, size=IMAGE_SIZE)


@pytest.mark.parametrize(
    "name",
    [
        "resnet18",
        # the TorchScript exporter takes ~9 s to trace densenet121 alone (24 s in all, loaded CPU)
        pytest.param("densenet121", marks=pytest.mark.slow),
        "seed_cnn",
    ],
)
def test_onnxruntime_matches_torch_on_real_and_random_images(name, real_images, tmp_path):
    module = random_module(name)
    path = tmp_path / "model.onnx"
    difference = export_onnx(module, path, IMAGE_SIZE, TRAIN_CONFIG, check_images=real_images)
    assert 0 <= difference <= 1e-4

    predictor = OnnxPredictor(path)
    noise = np.random.default_rng(5).integers(0, 256, (3, 4, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    for images in (real_images, noise):
        probabilities, decisions = predictor.predict(images)
        expected = torch_probabilities(module, images)
        np.testing.assert_allclose(probabilities, expected, rtol=0, atol=1e-4)
        assert decisions.dtype == np.uint8
        np.testing.assert_array_equal(decisions, module.decide(torch.from_numpy(expected)))


@pytest.fixture(scope="module")
def seed_cnn_onnx(tmp_path_factory) -> tuple[HPAModule, object]:
    module = random_module("seed_cnn", seed=3, ensure_one_label=False)
    path = tmp_path_factory.mktemp("onnx") / "seed_cnn.onnx"
    export_onnx(module, path, IMAGE_SIZE, TRAIN_CONFIG)
    return module, path


def test_metadata_round_trip(seed_cnn_onnx):
    module, path = seed_cnn_onnx
    predictor = OnnxPredictor(path)
    assert predictor.class_names == list(HPA2018.class_names)
    assert predictor.thresholds.dtype == np.float64
    np.testing.assert_array_equal(predictor.thresholds, module.class_thresholds.numpy())
    assert predictor.ensure_one_label is False
    assert predictor.image_size == IMAGE_SIZE
    assert predictor.model_name == "seed_cnn"
    assert predictor.train_config == TRAIN_CONFIG
    # plain metadata_props, readable by any ONNX tool
    properties = {prop.key: prop.value for prop in onnx.load(path).metadata_props}
    assert json.loads(properties[CLASS_NAMES_KEY])[27] == "Rods & rings"
    assert properties[TRAIN_CONFIG_KEY] == TRAIN_CONFIG


def test_without_ensure_one_label_an_image_may_get_no_class(seed_cnn_onnx):
    _, path = seed_cnn_onnx
    predictor = OnnxPredictor(path)
    probabilities = np.full((2, HPA2018.num_classes), 0.1, dtype=np.float32)
    probabilities[1, 4] = 0.9
    decisions = predictor.decide(probabilities)
    assert (
        decisions[0].sum() == 0 and decisions[1].tolist() == np.eye(HPA2018.num_classes)[4].tolist()
    )


def test_batch_axis_is_dynamic(seed_cnn_onnx):
    module, path = seed_cnn_onnx  # traced with a batch of 2 (EXAMPLE_BATCH_SIZE)
    predictor = OnnxPredictor(path)
    images = np.random.default_rng(1).integers(0, 256, (5, 4, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    probabilities = predictor.probabilities(images)
    assert probabilities.shape == (5, HPA2018.num_classes)
    np.testing.assert_allclose(probabilities, torch_probabilities(module, images), atol=1e-5)
    assert predictor.probabilities(images[:1]).shape == (1, HPA2018.num_classes)


def test_image_size_is_fixed(seed_cnn_onnx):
    _, path = seed_cnn_onnx
    predictor = OnnxPredictor(path)
    with pytest.raises(ValueError, match=rf"uint8 batches of shape \(N, 4, {IMAGE_SIZE}"):
        predictor.probabilities(np.zeros((2, 4, 32, 32), np.uint8))
    with pytest.raises(ValueError, match="float32"):
        predictor.probabilities(np.zeros((2, 4, IMAGE_SIZE, IMAGE_SIZE), np.float32))


def test_export_is_refused_above_the_tolerance(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"previous export")
    with pytest.raises(OnnxParityError, match=rf"refusing to write {path}.*differ.*by up to"):
        export_onnx(random_module("seed_cnn"), path, IMAGE_SIZE, tolerance=0.0)
    assert path.read_bytes() == b"previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # no temporary file left


def test_export_leaves_the_callers_module_as_it_was(tmp_path):
    module = random_module("seed_cnn").train()
    before = {key: value.clone() for key, value in module.state_dict().items()}
    export_onnx(module, tmp_path / "model.onnx", IMAGE_SIZE)
    assert module.training
    assert isinstance(module.backbone.pool, nn.AdaptiveAvgPool2d)
    for key, value in module.state_dict().items():
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize(
    ("input_size", "output_size"), [((4, 4), (6, 6)), ((8, 8), (6, 6)), ((7, 9), (3, 2))]
)
def test_fixed_size_pool_equals_adaptive_average_pooling(input_size, output_size):
    features = torch.randn(2, 3, *input_size)
    expected = nn.AdaptiveAvgPool2d(output_size)(features)
    pooled = FixedSizeAdaptiveAvgPool2d(input_size, output_size)(features)
    torch.testing.assert_close(pooled, expected)


def test_a_file_that_is_not_onnx_is_refused(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_text("not a model")
    with pytest.raises(HPAInputError, match=rf"{path} is not a readable ONNX model"):
        OnnxPredictor(path)
    with pytest.raises(HPAInputError, match="does not exist"):
        OnnxPredictor(tmp_path / "missing.onnx")


def test_an_onnx_file_without_hpa_metadata_is_refused(tmp_path):
    path = tmp_path / "plain.onnx"
    tensor = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3])
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])],
        "plain",
        [tensor],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3])],
    )
    onnx.save(onnx.helper.make_model(graph), path)
    with pytest.raises(HPAInputError, match=rf"{path} was not exported by hpa.*hpa.class_names"):
        OnnxPredictor(path)


NO_TRAINING_STACK = """
import sys
import numpy as np
from hpa.integrations.onnx_runtime import OnnxPredictor

predictor = OnnxPredictor(sys.argv[1])
size = predictor.image_size
probabilities, decisions = predictor.predict(np.zeros((3, 4, size, size), np.uint8))
assert probabilities.shape == decisions.shape == (3, 28), probabilities.shape
loaded = sorted(
    name for name in sys.modules
    if name.split(".")[0] in ("torch", "pytorch_lightning", "lightning", "timm")
)
assert not loaded, loaded
print("predicted without", predictor.model_name)
"""


def test_onnx_inference_imports_no_training_stack(seed_cnn_onnx):
    _, path = seed_cnn_onnx
    result = subprocess.run(
        [sys.executable, "-c", NO_TRAINING_STACK, str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "predicted without seed_cnn" in result.stdout
