"""Class activation maps in one forward pass: the classic CAM of Zhou et al. (2016).

For a network that ends in global average pooling (GAP) and one linear layer, the logit of class
``c`` is ``W_c . mean_xy F(x, y) + b_c``, where ``F`` is the last feature map (channels K at each
position) and ``W``, ``b`` are the classifier's weight and bias. GAP and the linear layer commute,
so the per-position map

    CAM_c(x, y) = W_c . F(x, y) + b_c

has the logit as its spatial mean: ``CAM_c.mean((h, w)) == logit_c`` exactly (up to float
rounding). ``class_activation_maps`` returns these maps in logit units, bias included, one map
per class of the module's label set at the feature map's resolution (input size / 32 for
resnet, densenet and efficientnet). A position's value is its share of the image logit: higher
means more evidence for the class there. They are not probabilities; ``sigmoid`` of a map's
mean is the image probability, and ``hpa.evaluation.cell_scoring.cam_scores`` turns them into
per-cell scores.

No gradients are needed (unlike ``hpa.integrations.cam``'s GradCAM, one backward pass per class):
the classifier's weights are the same at every position, which is what GradCAM recovers for such
networks anyway. The maps need a GAP + linear head: timm's ResNets, DenseNets and EfficientNets
have one (``global_pool`` with ``pool_type="avg"``, a ``nn.Linear`` classifier). Others (the
seed CNN, which pools to a 6 x 6 grid and then mixes positions in an MLP; ConvNeXt, which
normalises after pooling; max or avg+max pooling) are refused with an ``HPAInputError``, and
every call checks the identity above against the module's own logits, so a head that does
anything else between the pool and the classifier is refused too.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch
from torch import nn

from hpa.core.errors import HPAInputError
from hpa.models.backbones import create_backbone
from hpa.models.map_consistency import gap_linear_head
from hpa.models.module import HPAModule

NATIVE_OUTPUT_STRIDE = 32
"""The input pixels per feature-map position of resnet, densenet and efficientnet as trained."""


class ActivationMaps(NamedTuple):
    """One forward pass's class activation maps and the module's logits.

    ``maps``: (B, C, h, w) float32 class logit maps (``CAM_c(x, y) = W_c . F(x, y) + b_c``).
    ``logits``: (B, C) float32, the module's output for the same images; equal to
    ``maps.mean((2, 3))``. ``sigmoid(logits)`` are the image's class probabilities.
    """

    maps: torch.Tensor
    logits: torch.Tensor


def class_activation_maps(module: HPAModule, images: torch.Tensor) -> torch.Tensor:
    """The (B, C, h, w) class logit maps of a uint8 (B, 4, S, S) RGBY batch (see the module
    docstring); each map's mean over (h, w) is the module's logit of that class."""
    return activation_maps_and_logits(module, images).maps


def activation_maps_and_logits(module: HPAModule, images: torch.Tensor) -> ActivationMaps:
    """The class logit maps and the logits of a uint8 (B, 4, S, S) RGBY batch, one forward pass.

    The batch goes through ``module(images)`` (its own scaling, normalisation and memory
    format), in eval mode (restored afterwards) under ``torch.inference_mode``; a hook on the
    backbone's global pool keeps the feature map it receives. HPAInputError, naming the
    backbone, when it has no GAP + linear head, or when the maps' means are not its logits.
    """
    pool, classifier = _gap_linear_head(module)
    captured: list[torch.Tensor] = []

    def keep_features(_pool: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        captured.append(inputs[0])

    handle = pool.register_forward_pre_hook(keep_features)
    try:
        with torch.inference_mode(), _evaluating(module):
            logits = module(images.to(module.device)).float()
    finally:
        handle.remove()
    if not captured:
        raise HPAInputError(
            f"backbone {_backbone_name(module)} never calls its global pool; cells=cam needs a "
            "GAP+linear head"
        )
    features = captured[-1].float()  # (B, K, h, w)
    if features.ndim != 4 or features.shape[1] != classifier.in_features:
        raise HPAInputError(
            f"{_backbone_name(module)}: the global pool receives features of shape "
            f"{tuple(features.shape)}, not (B, {classifier.in_features}, h, w); cells=cam needs a "
            "GAP+linear head"
        )
    with torch.inference_mode():
        weight = classifier.weight.float()  # (C, K)
        maps = torch.einsum("bkhw,ck->bchw", features, weight)
        if classifier.bias is not None:
            maps = maps + classifier.bias.float().view(1, -1, 1, 1)
        _check_identity(module, maps, logits, features.dtype)
    return ActivationMaps(maps, logits)


def with_output_stride(module: HPAModule, output_stride: int) -> HPAModule:
    """``module`` with its backbone's last feature map at ``output_stride`` input pixels per
    position: the same weights, the later stages dilated instead of strided (timm's
    ``output_stride``). At 8 a 128 px image gives 16 x 16 maps instead of 4 x 4, fine enough to
    tell a cell from its neighbour; each position still sees what it saw in training, so the
    class evidence keeps its meaning. 32 returns ``module`` itself; otherwise a copy in eval
    mode (``module`` is left as it is). HPAInputError, naming the backbone, when timm cannot
    dilate it (densenet, the seed CNN)."""
    if output_stride == NATIVE_OUTPUT_STRIDE:
        return module
    if output_stride not in (8, 16):
        raise HPAInputError(f"cells.output_stride must be 8, 16 or 32, got {output_stride}")
    name = _backbone_name(module)
    try:
        backbone = create_backbone(
            name,
            num_classes=module.label_set.num_classes,
            in_chans=4,
            output_stride=output_stride,
        )
        backbone.load_state_dict(module.backbone.state_dict())
    except (TypeError, ValueError, RuntimeError) as error:
        raise HPAInputError(
            f"model.name={name} cannot make class maps at output stride {output_stride} "
            f"({error}); use cells.output_stride=32"
        ) from None
    backbone = backbone.to(device=module.device, memory_format=module._memory_format())
    # the memo hands the copy the new backbone: the trained one is not copied only to be dropped
    dilated = copy.deepcopy(module, memo={id(module.backbone): backbone})
    return dilated.eval()


def _gap_linear_head(module: HPAModule) -> tuple[nn.Module, nn.Linear]:
    """The backbone's global average pool and its linear classifier; HPAInputError otherwise."""
    return gap_linear_head(module.backbone, _backbone_name(module), "cells=cam")


def _check_identity(
    module: HPAModule, maps: torch.Tensor, logits: torch.Tensor, dtype: torch.dtype
) -> None:
    """HPAInputError when the maps' spatial means are not the module's logits: something
    between the pool and the classifier (a norm, an MLP) that the maps would ignore."""
    tolerance = 1e-3 if dtype == torch.float32 else 2e-2
    means = maps.mean(dim=(2, 3))
    if not torch.allclose(means, logits, rtol=tolerance, atol=tolerance):
        largest = (means - logits).abs().max().item()
        raise HPAInputError(
            f"backbone {_backbone_name(module)}: the class maps' means differ from its logits "
            f"by up to {largest:.3g}, so its head is not a global average pool followed by the "
            "linear classifier; cells=cam needs a GAP+linear head"
        )


def _backbone_name(module: HPAModule) -> str:
    return str(module.hparams.get("name", type(module.backbone).__name__))


@contextmanager
def _evaluating(module: nn.Module) -> Iterator[None]:
    """The module in eval mode (dropout off, BatchNorm on its running statistics); every
    submodule's training flag is restored afterwards (a finetuning callback may keep some in
    eval mode while the rest trains)."""
    flags = [(submodule, submodule.training) for submodule in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for submodule, training in flags:
            submodule.training = training
