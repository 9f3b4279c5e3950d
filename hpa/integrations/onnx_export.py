"""Export a trained HPAModule to an .onnx file that predicts on raw images by itself.

The graph takes the uint8 RGBY batch as the datasets give it (N x 4 x S x S) and returns the
class probabilities of its label set: the scaling to 0..1, the channel normalisation and the
sigmoid are inside it.
Its metadata (``metadata_props``, keys in ``hpa.integrations.onnx_runtime``) hold the class names,
the per-class thresholds, ``ensure_one_label``, the image size, the backbone name and the training
config, so ``OnnxPredictor`` turns probabilities into decisions without the checkpoint.

Only the batch axis is dynamic; the image side is fixed to the size the model was trained at:
the thresholds were tuned at that size (other sizes change the receptive field per cell and the
probabilities), the TorchScript exporter cannot export the seed CNN's adaptive pooling with a
symbolic input size, and with fixed sizes every shape the tracer turns into a constant is exact,
so the parity check below covers every input the file accepts.

Exporter: ``torch.onnx.export(..., dynamo=False)``, the TorchScript-based one. torch 2.14's
default ``dynamo=True`` needs the ``onnxscript`` package, which this project does not install;
the TorchScript exporter is deprecated but exports every backbone here. It cannot export an
adaptive average pool whose output size does not divide its input size (the seed CNN at 64 or
128 px), so those pools are exported as the equivalent two matrix products.

Before the file is written, onnxruntime's probabilities are compared with the torch module's on
the images given and on random ones; above ``tolerance`` the export is refused (OnnxParityError)
and nothing is written. The file is written atomically.
"""

from __future__ import annotations

import copy
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn
from tqdm import tqdm

from hpa.core.errors import HPAInputError
from hpa.core.io import atomic_path
from hpa.integrations import onnx_runtime
from hpa.models.module import HPAModule

log = logging.getLogger(__name__)

OPSET = 18
DEFAULT_TOLERANCE = 1e-4
"""Largest accepted |probability difference| between onnxruntime and torch (float32 kernels
differ by ~1e-6 on these models)."""
NUM_RANDOM_CHECK_IMAGES = 4
CHECK_BATCH_SIZE = 8
EXAMPLE_BATCH_SIZE = 2  # traced with 2 images so that no batch-size-1 special case is recorded


class OnnxParityError(HPAInputError):
    """The exported graph's probabilities differ from the torch module's beyond the tolerance.

    An HPAInputError so that the command line reports it in one line, like bad input."""


class ProbabilitiesOfRawImages(nn.Module):
    """An HPAModule as uint8 RGBY images (N, 4, H, W) -> class probabilities (N, classes): the
    module's own scaling and normalisation, then a sigmoid."""

    def __init__(self, module: HPAModule) -> None:
        super().__init__()
        self.module = module

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.module(images))


class FixedSizeAdaptiveAvgPool2d(nn.Module):
    """``nn.AdaptiveAvgPool2d`` for one input size, as ``rows @ x @ columns``: the TorchScript
    ONNX exporter refuses adaptive pools whose output size does not divide the input size."""

    def __init__(self, input_size: tuple[int, int], output_size: tuple[int, int]) -> None:
        super().__init__()
        self.register_buffer("rows", _averaging_matrix(input_size[0], output_size[0]))
        self.register_buffer("columns", _averaging_matrix(input_size[1], output_size[1]).T)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.rows @ features @ self.columns


def _averaging_matrix(input_size: int, output_size: int) -> torch.Tensor:
    """(output, input) matrix averaging the bins of adaptive pooling: bin i covers
    [floor(i * input / output), ceil((i + 1) * input / output))."""
    matrix = torch.zeros(output_size, input_size)
    for index in range(output_size):
        start = (index * input_size) // output_size
        end = -(-((index + 1) * input_size) // output_size)
        matrix[index, start:end] = 1.0 / (end - start)
    return matrix


def replace_uneven_adaptive_pools(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Replace, in place, each ``nn.AdaptiveAvgPool2d`` of ``model`` whose output size does not
    divide the input size it gets from ``example`` by a ``FixedSizeAdaptiveAvgPool2d``.
    Returns the names of the replaced modules."""
    pools = {
        name: layer for name, layer in model.named_modules() if type(layer) is nn.AdaptiveAvgPool2d
    }
    input_sizes = _input_sizes(model, example, pools)
    replaced = []
    for name, input_size in input_sizes.items():
        requested = pools[name].output_size
        if not isinstance(requested, tuple):
            requested = (requested, requested)
        # None in output_size keeps that side's input size
        output_size = tuple(
            full if size is None else size for full, size in zip(input_size, requested, strict=True)
        )
        if all(full % size == 0 for full, size in zip(input_size, output_size, strict=True)):
            continue
        model.set_submodule(name, FixedSizeAdaptiveAvgPool2d(input_size, output_size))
        replaced.append(name)
    return replaced


def _input_sizes(
    model: nn.Module, example: torch.Tensor, layers: dict[str, nn.Module]
) -> dict[str, tuple[int, int]]:
    """(H, W) of the input each of ``layers`` gets when ``model`` runs on ``example``."""
    sizes: dict[str, tuple[int, int]] = {}

    def recorder(name: str):
        def record(layer: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor):
            sizes[name] = tuple(inputs[0].shape[-2:])

        return record

    hooks = [layer.register_forward_hook(recorder(name)) for name, layer in layers.items()]
    try:
        with torch.inference_mode():
            model(example)
    finally:
        for hook in hooks:
            hook.remove()
    return sizes


def onnx_metadata(
    module: HPAModule, image_size: int, train_config: str, load_size: int | None = None
) -> dict[str, str]:
    """The ``metadata_props`` of the exported file (JSON values, the config as given);
    ``load_size`` None: images are read at ``image_size``."""
    thresholds = module.class_thresholds.detach().cpu().double().tolist()
    label_set = module.label_set
    if len(thresholds) != label_set.num_classes:
        raise HPAInputError(
            f"the module has {len(thresholds)} thresholds, its label set {label_set.name} "
            f"{label_set.num_classes} classes"
        )
    return {
        onnx_runtime.CLASS_NAMES_KEY: json.dumps(list(label_set.class_names)),
        onnx_runtime.LABEL_SET_KEY: json.dumps(label_set.to_dict()),
        onnx_runtime.THRESHOLDS_KEY: json.dumps(thresholds),
        onnx_runtime.ENSURE_ONE_LABEL_KEY: json.dumps(bool(module.hparams.ensure_one_label)),
        onnx_runtime.IMAGE_SIZE_KEY: json.dumps(int(image_size)),
        onnx_runtime.LOAD_SIZE_KEY: json.dumps(int(load_size or image_size)),
        onnx_runtime.MODEL_NAME_KEY: str(module.hparams.name),
        onnx_runtime.TRAIN_CONFIG_KEY: train_config,
    }


def random_images(count: int, image_size: int, seed: int = 0) -> np.ndarray:
    """``count`` uint8 (4, S, S) images of uniform noise, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, 4, image_size, image_size), dtype=np.uint8)


def max_probability_difference(
    onnx_path: str | Path,
    model: ProbabilitiesOfRawImages,
    images: np.ndarray,
    batch_size: int = CHECK_BATCH_SIZE,
) -> float:
    """Largest |onnxruntime - torch| probability over ``images`` (uint8 N x 4 x S x S)."""
    predictor = onnx_runtime.OnnxPredictor(onnx_path)
    largest = 0.0
    batches = range(0, len(images), batch_size)
    for start in tqdm(batches, desc="ONNX parity check", unit="batch", leave=False):
        batch = images[start : start + batch_size]
        with torch.inference_mode():
            expected = model(torch.from_numpy(batch)).numpy()
        largest = max(largest, float(np.abs(predictor.probabilities(batch) - expected).max()))
    return largest


def export_onnx(
    module: HPAModule,
    path: str | Path,
    image_size: int,
    train_config: str = "",
    check_images: np.ndarray | None = None,
    num_random_images: int = NUM_RANDOM_CHECK_IMAGES,
    tolerance: float = DEFAULT_TOLERANCE,
    load_size: int | None = None,
) -> float:
    """Write ``module`` as an .onnx file at ``path`` (atomically) and return the largest
    probability difference between onnxruntime and torch found by the parity check.

    ``image_size``: the side of the square images the file takes (the training size).
    ``load_size``: the side images are read at before their centre ``image_size`` crop, as the
    run read its val and test images (``data.load_size``; None: ``image_size``), stored in the
    metadata for ``hpa-predict backend=onnx``.
    ``train_config``: the training config as YAML or JSON text, stored in the metadata.
    ``check_images``: uint8 (N, 4, S, S) real images for the parity check, to which
    ``num_random_images`` noise images are added. Above ``tolerance`` raises OnnxParityError
    naming the file and the difference, and writes nothing. The caller's module is not changed
    (a copy is exported, in eval mode, on the CPU).
    """
    path = Path(path)
    images = random_images(num_random_images, image_size)
    if check_images is not None:
        check_images = np.asarray(check_images)
        if check_images.dtype != np.uint8 or check_images.shape[1:] != images.shape[1:]:
            raise ValueError(
                f"check_images must be uint8 (N, {', '.join(map(str, images.shape[1:]))}), got "
                f"{check_images.dtype} {check_images.shape}"
            )
        images = np.concatenate([check_images, images])
    if len(images) == 0:
        raise ValueError("the parity check needs at least one image")

    reference = ProbabilitiesOfRawImages(copy.deepcopy(module).cpu()).eval()
    exported = copy.deepcopy(reference)
    example = torch.from_numpy(random_images(EXAMPLE_BATCH_SIZE, image_size, seed=1))
    replaced = replace_uneven_adaptive_pools(exported, example)
    if replaced:
        log.info("Adaptive pools exported as matrix products: %s", ", ".join(replaced))

    with atomic_path(path) as temporary:
        _trace_to_onnx(exported, example, temporary)
        model = onnx.load(temporary)
        onnx.helper.set_model_props(
            model, onnx_metadata(module, image_size, train_config, load_size)
        )
        onnx.checker.check_model(model)
        onnx.save(model, temporary)
        difference = max_probability_difference(temporary, reference, images)
        log.info(
            "ONNX parity of %s: max |onnxruntime - torch| probability %.3g over %d images "
            "(%d given, %d random; tolerance %g)",
            path,
            difference,
            len(images),
            len(images) - num_random_images,
            num_random_images,
            tolerance,
        )
        if not difference <= tolerance:  # also refuses NaN
            raise OnnxParityError(
                f"refusing to write {path}: its probabilities differ from the torch module's by "
                f"up to {difference:.3g}, above the tolerance {tolerance:g}"
            )
    return difference


def _trace_to_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings():
        # The deprecation notices of the TorchScript exporter (see the module docstring), and
        # the tracer's notes that shapes become constants: they are, and are exact, since the
        # image size is fixed.
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=".*feature will be removed.*")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=[onnx_runtime.INPUT_NAME],
            output_names=[onnx_runtime.OUTPUT_NAME],
            dynamic_axes={
                onnx_runtime.INPUT_NAME: {0: "batch"},
                onnx_runtime.OUTPUT_NAME: {0: "batch"},
            },
        )
