"""Class activation maps: where in an image a trained model finds each class (grad-cam library).

``class_activation_maps`` computes, for each image of a uint8 RGBY batch and each of its class
ids, a heat map in [0, 1] at the image's size (each map scaled by its own maximum, as the
library does) and the model's probability of that class. ``explain_images`` does the same for
images with class lists of their own (``predicted_class_ids``: the classes the model predicts).
``draw_explanation`` turns one image's maps into a figure (``hpa.plots.figures.save_figure``
writes it).

The methods suit classifiers that pool the target layer globally before anything else (timm's
CNNs), so that a class's gradient is the same at every position of the layer and the map is the
layer's activations weighted by it. The seed CNN pools to a 6 x 6 grid and then mixes positions
in its linear layers: its maps are drawn, but they are less dependable (docs,
explain-and-export.md, "Sanity checks").

Methods (``CAM_METHODS``, case-insensitive): GradCAM and GradCAM++ weight the target layer's
channels by the class logit's gradients; AblationCAM, gradient-free, by how much the class
probability drops when a channel is zeroed. AblationCAM rather than the library's other
gradient-free methods: EigenCAM is the first principal component of the activations, the same
map for every class; ScoreCAM holds a masked copy of the input for every channel of the target
layer at once (2048 x 4 x 512 x 512 floats, 8.6 GB per image, for resnet50 at 512 px), while
AblationCAM's batches stay at ``ABLATION_BATCH_SIZE`` images. Its score is the probability, not
the logit, because it divides by the score: a negative logit would flip the map's sign. Both
gradient-free methods run one forward pass per channel of the target layer, per class, so they
are slow on the CPU (an estimate: minutes per class and image for resnet18 at 512 px, about
5 TFLOP).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np
import torch
from matplotlib.figure import Figure
from pytorch_grad_cam import AblationCAM, GradCAM, GradCAMPlusPlus
from pytorch_grad_cam.ablation_layer import AblationLayer
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.find_layers import replace_layer_recursive
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from timm.models.convnext import ConvNeXt
from timm.models.densenet import DenseNet
from timm.models.efficientnet import EfficientNet
from timm.models.resnet import ResNet
from torch import nn

from hpa.core.errors import HPAInputError
from hpa.core.labels import CHANNELS, LabelSet
from hpa.evaluation.thresholds import binarize
from hpa.models.backbones import SeedCNN
from hpa.models.module import HPAModule
from hpa.plots.figures import heat_map_title
from hpa.plots.rgby import heat_map_overlay, rgby_composite

CAM_METHODS: dict[str, type[BaseCAM]] = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "ablationcam": AblationCAM,
}
ABLATION_BATCH_SIZE = 32

TARGET_LAYERS: dict[type[nn.Module], str] = {
    ResNet: "layer4",  # the last residual stage (resnet*, resnext*, seresnet*...)
    DenseNet: "features.norm5",  # the final BatchNorm + ReLU after the last dense block
    EfficientNet: "bn2",  # BatchNorm + activation after conv_head (efficientnet*, mobilenetv2...)
    ConvNeXt: "stages.3",  # the last stage (its norm is in the head)
    SeedCNN: "features.3",  # the last conv block (conv, BN, ReLU, max-pool, dropout)
}
"""The layer whose activations the maps are computed from, per backbone class: the last spatial
feature map before global pooling."""

PANEL_INCHES = 3.0
PANEL_DPI = 100


class LogitsOfRawImages(nn.Module):
    """An HPAModule as (N, 4, H, W) RGBY images on the 0..255 scale, uint8 or float -> (N, classes)
    logits, with the module's own scaling and normalisation. Float input lets the gradient-free
    methods feed masked images and the gradient methods backpropagate.

    Only the backbone is a submodule: grad-cam walks the submodules and compares them with ``==``
    to swap AblationCAM's layer in and out, and torchmetrics metrics (in the HPAModule) overload
    ``==``; the module's forward is kept as a plain bound method."""

    def __init__(self, module: HPAModule) -> None:
        super().__init__()
        self.backbone = module.backbone
        self.module_forward = module.forward

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.is_floating_point():  # HPAModule takes floats on the 0..1 scale
            images = images / 255.0
        return self.module_forward(images)


class ClassProbabilityTarget:
    """The sigmoid probability of one class, as a grad-cam target (AblationCAM's score)."""

    def __init__(self, class_id: int) -> None:
        self.class_id = class_id

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits[..., self.class_id])


def target_layer_name(module: HPAModule, override: str | None = None) -> str:
    """The name, inside ``module.backbone``, of the layer the maps are computed from:
    ``override`` when given, else the one of ``TARGET_LAYERS`` for the backbone's family."""
    backbone = module.backbone
    name = override
    if name is None:
        name = next(
            (layer for family, layer in TARGET_LAYERS.items() if isinstance(backbone, family)),
            None,
        )
    if name is None:
        families = ", ".join(family.__name__ for family in TARGET_LAYERS)
        raise HPAInputError(
            f"no class activation map target layer known for model {module.hparams.name!r} "
            f"({type(backbone).__name__}; known families: {families}): name one of its layers "
            "explicitly (a module name such as 'layer4' or 'features.norm5')"
        )
    try:
        backbone.get_submodule(name)
    except AttributeError:
        raise HPAInputError(
            f"model {module.hparams.name!r} has no layer {name!r} (its last layers: "
            f"{', '.join(_last_layer_names(backbone))})"
        ) from None
    return name


def _last_layer_names(backbone: nn.Module, count: int = 6) -> list[str]:
    top_level_and_second = [name for name, _ in backbone.named_modules() if name.count(".") <= 1]
    return top_level_and_second[-count:]


def cam_method(name: str) -> type[BaseCAM]:
    """The grad-cam class of a method name (case-insensitive: GradCAM, GradCAM++, AblationCAM)."""
    method = CAM_METHODS.get(name.lower())
    if method is None:
        raise HPAInputError(
            f"unknown class activation map method {name!r}: choose one of "
            f"{', '.join(cls.__name__ for cls in CAM_METHODS.values())}"
        )
    return method


class Explanation(NamedTuple):
    """One image's maps: ``maps[k]`` (H x W in [0, 1]) shows class ``class_ids[k]``, which the
    model gives the probability ``probabilities[k]``."""

    class_ids: np.ndarray
    maps: np.ndarray
    probabilities: np.ndarray


def class_probabilities(module: HPAModule, images: np.ndarray | torch.Tensor) -> np.ndarray:
    """(B, classes) float32 probabilities of a uint8 (B, 4, H, W) batch, without test-time
    augmentation (the maps explain the plain image), on the module's device, in eval mode (the
    module's mode is restored)."""
    if not isinstance(images, torch.Tensor):
        images = torch.from_numpy(np.asarray(images))
    was_training = module.training
    try:
        module.eval()
        with torch.inference_mode():
            logits = module(images.to(next(module.parameters()).device))
        return torch.sigmoid(logits).float().cpu().numpy()
    finally:
        module.train(was_training)


def predicted_class_ids(module: HPAModule, probabilities: np.ndarray) -> list[np.ndarray]:
    """The classes the module predicts for each row of ``probabilities`` at its own thresholds
    (``hpa.evaluation.thresholds.binarize``, with its ``ensure_one_label``), most probable first."""
    decisions = binarize(
        probabilities, module.class_thresholds.cpu().numpy(), module.hparams.ensure_one_label
    )
    return [
        ids[np.argsort(-row[ids], kind="stable")]
        for ids, row in zip((np.flatnonzero(d) for d in decisions), probabilities, strict=True)
    ]


def explain_images(
    module: HPAModule,
    images: np.ndarray,
    class_ids: Sequence[Sequence[int]],
    method: str = "GradCAM",
    target_layer: str | None = None,
) -> list[Explanation]:
    """The maps of each image's own classes: ``class_ids[b]`` for image b of the uint8
    (B, 4, H, W) ``images``, lists that may differ in length (an empty one gives no map).
    Images whose lists have the same length are computed together."""
    images = np.asarray(images)
    if len(class_ids) != len(images):
        raise ValueError(f"{len(images)} images but {len(class_ids)} class lists")
    lists = [np.asarray(ids, dtype=np.int64).reshape(-1) for ids in class_ids]
    explanations: list[Explanation | None] = [None] * len(images)
    for count in sorted({len(ids) for ids in lists}):
        rows = [index for index, ids in enumerate(lists) if len(ids) == count]
        grid = np.stack([lists[index] for index in rows])
        maps, probabilities = class_activation_maps(
            module, images[rows], grid, method, target_layer
        )
        for position, index in enumerate(rows):
            explanations[index] = Explanation(
                grid[position], maps[position], probabilities[position]
            )
    return explanations


def class_activation_maps(
    module: HPAModule,
    images: np.ndarray | torch.Tensor,
    class_ids: np.ndarray | Sequence[Sequence[int]],
    method: str = "GradCAM",
    target_layer: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(maps, probabilities) of uint8 (B, 4, H, W) RGBY ``images`` and (B, K) ``class_ids``:
    maps (B, K, H, W) float32 in [0, 1] where map [b, k] shows class ``class_ids[b, k]`` in
    image b, and probabilities (B, K) float32 of those classes.

    ``method``: a key of ``CAM_METHODS``; ``target_layer``: a layer name of ``module.backbone``
    overriding the family's default (``target_layer_name``). The module runs on its own device;
    its train/eval mode is restored afterwards. A map is all zeros when nothing in the layer
    speaks for the class (GradCAM keeps only the positive part of the weighted activations).
    """
    if not isinstance(images, torch.Tensor):
        images = torch.from_numpy(np.asarray(images))
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != len(CHANNELS):
        raise ValueError(f"images must be uint8 (B, 4, H, W), got {images.dtype} {images.shape}")
    class_ids = np.asarray(class_ids)
    if class_ids.ndim != 2 or len(class_ids) != len(images):
        raise ValueError(f"class_ids must be (B={len(images)}, K), got shape {class_ids.shape}")
    if class_ids.size and not (
        np.issubdtype(class_ids.dtype, np.integer)
        and class_ids.min() >= 0
        and class_ids.max() < module.label_set.num_classes
    ):
        raise ValueError(
            f"class_ids must be integers in 0..{module.label_set.num_classes - 1}: {class_ids}"
        )
    method_class = cam_method(method)
    layer_name = target_layer_name(module, target_layer)

    model = LogitsOfRawImages(module)
    device = next(module.parameters()).device
    pixels = images.to(device=device, dtype=torch.float32)
    was_training = module.training
    try:
        model.eval()
        with torch.no_grad():
            all_probabilities = torch.sigmoid(model(pixels)).cpu().numpy()
        rows = np.arange(len(images))[:, None]
        probabilities = all_probabilities[rows, class_ids].astype(np.float32)
        target_class = (
            ClassProbabilityTarget if method_class is AblationCAM else ClassifierOutputTarget
        )
        layer = model.backbone.get_submodule(layer_name)
        with torch.enable_grad(), _cam(method_class, model, layer) as cam:
            maps = [
                cam(input_tensor=pixels, targets=[target_class(int(c)) for c in column])
                for column in class_ids.T
            ]
    finally:
        module.train(was_training)
    if not maps:
        return np.zeros((*class_ids.shape, *images.shape[-2:]), np.float32), probabilities
    return np.clip(np.stack(maps, axis=1), 0.0, 1.0).astype(np.float32), probabilities


@contextmanager
def _cam(method_class: type[BaseCAM], model: nn.Module, layer: nn.Module) -> Iterator[BaseCAM]:
    """A grad-cam object on ``layer``, its hooks released (and an ablated layer put back)
    afterwards. Not ``with cam``: BaseCAM.__exit__ swallows IndexErrors."""
    ablation_layer = AblationLayer()  # a fresh one: the library's default is a shared instance
    if method_class is AblationCAM:
        cam = AblationCAM(
            model, [layer], ablation_layer=ablation_layer, batch_size=ABLATION_BATCH_SIZE
        )
    else:
        cam = method_class(model, [layer])
    try:
        yield cam
    finally:
        cam.activations_and_grads.release()
        # AblationCAM swaps the layer for its ablation layer while it runs: undo after an error
        replace_layer_recursive(model, ablation_layer, layer)


def draw_explanation(
    label_set: LabelSet,
    image: np.ndarray,
    maps: np.ndarray,
    class_ids: Sequence[int],
    probabilities: Sequence[float],
    title: str | None = None,
    columns: int | None = None,
) -> Figure:
    """One image's panel: its RGBY composite, its green (protein) channel alone, then one heat
    map over the composite per class, titled with the class name and probability.

    ``image``: uint8 (4, H, W); ``maps``: (K, H, W) in [0, 1]; ``class_ids``, ``probabilities``:
    K each; ``columns``: at most this many pictures per row (default: all in one row). Drawn
    with the Agg canvas (no pyplot)."""
    maps = np.asarray(maps)
    if maps.ndim != 3 or not len(maps) == len(class_ids) == len(probabilities):
        raise ValueError(
            f"expected K maps, class ids and probabilities, got maps {maps.shape}, "
            f"{len(class_ids)} class ids, {len(probabilities)} probabilities"
        )
    composite = rgby_composite(image)
    panels = [(composite, "RGBY composite"), (image[CHANNELS.index("green")], "green (protein)")]
    for heat_map, class_id, probability in zip(maps, class_ids, probabilities, strict=True):
        panels.append(
            (
                heat_map_overlay(composite, heat_map),
                heat_map_title(label_set, class_id, probability, heat_map),
            )
        )
    columns = min(columns or len(panels), len(panels))
    rows = -(-len(panels) // columns)
    figure = Figure(
        figsize=(PANEL_INCHES * columns, (PANEL_INCHES + 0.6) * rows),
        dpi=PANEL_DPI,
        layout="constrained",
    )
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for axis in axes:
        axis.set_axis_off()
    for axis, (picture, caption) in zip(axes, panels, strict=False):
        axis.imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=0, vmax=255)
        axis.set_title(caption, fontsize=10)
    if title:
        figure.suptitle(title, fontsize=11)
    return figure
