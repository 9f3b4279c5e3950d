"""Backbones mapping a (B, 4, H, W) RGBY image batch to (B, num_classes) logits.

``create_backbone("seed_cnn", num_classes)`` builds the seed report's small CNN; any other name is a timm model.
Pretrained timm weights are RGB: the stem conv is widened to RGBY by keeping the RGB filters and
copying the red filter for the yellow channel, as the 2018 HPA Kaggle winners did.
"""

from __future__ import annotations

import difflib
import logging
from pathlib import Path
from typing import Any

import timm
import torch
from timm.models import load_state_dict
from torch import nn

from hpa.core.errors import HPAInputError

logger = logging.getLogger(__name__)

SEED_CNN_NAME = "seed_cnn"
RGB_CHANNELS = 3
RED_CHANNEL = 0

# timm names that do not name a registered architecture but still load (weights from a hub/dir).
_TIMM_SOURCE_PREFIXES = ("hf-hub:", "hf_hub:", "local-dir:")


class SeedCNN(nn.Module):
    """The seed report's CNN: 4 conv blocks (4->16->32->64->128), pool to a fixed grid, 3 linears.

    Each conv block is a 3x3 conv, BatchNorm, ReLU, 2x2 max-pool and Dropout. The adaptive pool to
    ``pooled_size`` x ``pooled_size`` makes the classifier independent of the input size (inputs
    need to be at least 16 x 16, the size the four max-pools halve to 1 x 1).
    """

    conv_channels: tuple[int, ...] = (16, 32, 64, 128)

    def __init__(
        self,
        num_classes: int,
        in_chans: int = 4,
        drop_rate: float = 0.0,
        pooled_size: int = 6,
        hidden_features: tuple[int, int] = (256, 64),
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_chans = in_chans

        blocks = []
        block_in_channels = in_chans
        for block_out_channels in self.conv_channels:
            blocks.append(_seed_conv_block(block_in_channels, block_out_channels, drop_rate))
            block_in_channels = block_out_channels
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(pooled_size)

        first_hidden, second_hidden = hidden_features
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(block_in_channels * pooled_size * pooled_size, first_hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(drop_rate),
            nn.Linear(first_hidden, second_hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(drop_rate),
            nn.Linear(second_hidden, num_classes),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(images)))

    def get_classifier(self) -> nn.Module:
        """The three linear layers after the pool, as timm models name their classifier."""
        return self.classifier


def _seed_conv_block(in_channels: int, out_channels: int, drop_rate: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Dropout(drop_rate),
    )


def create_backbone(
    name: str,
    num_classes: int,
    in_chans: int = 4,
    pretrained: bool = False,
    pretrained_path: str | None = None,
    drop_rate: float = 0.0,
    allow_partial_pretrained: bool = False,
    **timm_kwargs: Any,
) -> nn.Module:
    """Build the model ``name``: ``"seed_cnn"`` or any timm model name (resnet50, densenet121...).

    With ``pretrained=True`` the timm RGB weights are loaded (from ``pretrained_path``, a local
    state-dict file, if given; otherwise timm downloads them) into a 3-channel model whose stem
    conv is then widened to ``in_chans`` channels; the classifier is freshly initialised whenever
    ``num_classes`` differs from the checkpoint's. A ``pretrained_path`` file that misses some of
    the backbone's weights is refused unless ``allow_partial_pretrained``. ``timm_kwargs`` go to
    ``timm.create_model``
    (or to ``SeedCNN`` for the seed CNN).
    """
    if name == SEED_CNN_NAME:
        if pretrained:
            raise ValueError(f"{SEED_CNN_NAME!r} has no pretrained weights; use pretrained=False")
        return SeedCNN(
            num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate, **timm_kwargs
        )

    _check_timm_name(name)
    if not pretrained:
        if pretrained_path is not None:
            logger.warning(
                "pretrained_path=%s is ignored because pretrained=False", pretrained_path
            )
        return timm.create_model(
            name,
            pretrained=False,
            num_classes=num_classes,
            in_chans=in_chans,
            drop_rate=drop_rate,
            **timm_kwargs,
        )

    model = _create_pretrained_rgb_model(
        name, num_classes, pretrained_path, drop_rate, timm_kwargs, allow_partial_pretrained
    )
    if in_chans != RGB_CHANNELS:
        widen_stem_conv(model, in_chans)
    return model


def check_backbone_name(name: str) -> None:
    """HPAInputError, with the closest names, unless ``name`` is the seed CNN or a timm model:
    what a run checks before it reads any data."""
    if name == SEED_CNN_NAME:
        return
    try:
        _check_timm_name(name)
    except ValueError as error:
        raise HPAInputError(f"model.name={name}: {error}") from None


def _check_timm_name(name: str) -> None:
    if name.startswith(_TIMM_SOURCE_PREFIXES) or timm.is_model(name):
        return
    known_names = [SEED_CNN_NAME, *timm.list_models()]
    close_matches = difflib.get_close_matches(name, known_names, n=5, cutoff=0.6)
    close_matches += [m for m in timm.list_models(f"*{name}*") if m not in close_matches]
    suggestion = ", ".join(close_matches[:8]) if close_matches else "none"
    raise ValueError(
        f"Unknown backbone {name!r}: neither {SEED_CNN_NAME!r} nor a timm model. "
        f"Close matches: {suggestion}"
    )


def _create_pretrained_rgb_model(
    name: str,
    num_classes: int,
    pretrained_path: str | None,
    drop_rate: float,
    timm_kwargs: dict[str, Any],
    allow_partial: bool = False,
) -> nn.Module:
    """Create a 3-channel timm model with its pretrained RGB weights loaded."""
    if pretrained_path is None:
        logger.info("Loading timm's pretrained RGB weights for %s", name)
    else:
        if not Path(pretrained_path).is_file():
            raise FileNotFoundError(f"pretrained_path {pretrained_path} of {name} is not a file")
        logger.info("Loading pretrained RGB weights for %s from %s", name, pretrained_path)
        # timm loads a local 'file' ahead of any download; it still applies the model's checkpoint
        # filter and drops the checkpoint's classifier when num_classes differs from it.
        overlay = dict(timm_kwargs.pop("pretrained_cfg_overlay", None) or {})
        overlay["file"] = str(pretrained_path)
        timm_kwargs = {**timm_kwargs, "pretrained_cfg_overlay": overlay}

    model = timm.create_model(
        name,
        pretrained=True,
        num_classes=num_classes,
        in_chans=RGB_CHANNELS,
        drop_rate=drop_rate,
        **timm_kwargs,
    )
    if pretrained_path is not None:
        _check_checkpoint_covers_model(model, pretrained_path, allow_partial)
    pretrained_classes = model.pretrained_cfg.get("num_classes")
    if pretrained_classes != num_classes:
        logger.info(
            "%s: classifier re-initialised for %d classes (checkpoint has %s)",
            name,
            num_classes,
            pretrained_classes,
        )
    return model


def _check_checkpoint_covers_model(
    model: nn.Module, pretrained_path: str, allow_partial: bool = False
) -> None:
    """Fail when the file names none of the model's weights, and when it misses some unless
    ``allow_partial`` (``model.allow_partial_pretrained=true``: then a warning lists them).

    timm loads non-strictly whenever the classifier is dropped, and only logs missing keys at
    INFO level, so a checkpoint whose keys carry a prefix ("model.", "backbone.") would otherwise
    leave the whole model silently at its random init.
    """
    checkpoint_keys = set(load_state_dict(pretrained_path))
    classifier_names = model.pretrained_cfg.get("classifier") or ()
    if isinstance(classifier_names, str):
        classifier_names = (classifier_names,)
    classifier_prefixes = tuple(f"{classifier}." for classifier in classifier_names)
    backbone_keys = [key for key in model.state_dict() if not key.startswith(classifier_prefixes)]
    missing_keys = [key for key in backbone_keys if key not in checkpoint_keys]

    if len(missing_keys) == len(backbone_keys):
        architecture = model.pretrained_cfg.get("architecture")
        raise ValueError(
            f"{pretrained_path} holds none of the weights of {architecture} (model keys like "
            f"{backbone_keys[:2]}, file keys like {sorted(checkpoint_keys)[:2]})"
        )
    if missing_keys:
        described = (
            f"{len(missing_keys)} of {len(backbone_keys)} backbone weights are not in "
            f"{pretrained_path} and would keep their random init: {', '.join(missing_keys[:5])}"
        )
        if not allow_partial:
            raise HPAInputError(
                f"{described}; set model.allow_partial_pretrained=true to train with them so"
            )
        logger.warning("%s (model.allow_partial_pretrained=true)", described)


def widen_stem_conv(model: nn.Module, in_chans: int) -> None:
    """Widen the pretrained RGB stem conv(s) of a timm model to ``in_chans`` input channels.

    The stem is found through ``model.pretrained_cfg["first_conv"]``. The RGB filters are kept
    unchanged and every extra channel (the yellow one for RGBY) starts as a copy of the red filter.
    The conv module keeps its class and settings (stride, padding, bias...); only its weight is
    replaced, so timm conv subclasses (same-padding, weight-standardised) keep working.
    """
    first_conv_names = getattr(model, "pretrained_cfg", {}).get("first_conv")
    if not first_conv_names:
        raise ValueError(
            f"{type(model).__name__} names no stem conv in pretrained_cfg['first_conv']"
        )
    if isinstance(first_conv_names, str):
        first_conv_names = (first_conv_names,)

    for conv_name in first_conv_names:
        conv = model.get_submodule(conv_name)
        if not isinstance(conv, nn.Conv2d):
            raise ValueError(f"stem {conv_name} is a {type(conv).__name__}, not an nn.Conv2d")
        if conv.in_channels == in_chans:
            continue
        _widen_conv_input(conv, in_chans)
        logger.info(
            "Widened stem conv %s to %d input channels (extra channels copy the red filter)",
            conv_name,
            in_chans,
        )
    if hasattr(model, "in_chans"):
        model.in_chans = in_chans


def _widen_conv_input(conv: nn.Conv2d, in_chans: int) -> None:
    if conv.groups != 1:
        raise ValueError(f"cannot widen a grouped stem conv (groups={conv.groups})")
    if in_chans < conv.in_channels:
        raise ValueError(
            f"cannot narrow a stem conv from {conv.in_channels} to {in_chans} channels"
        )

    old_weight = conv.weight.detach()
    extra_channels = in_chans - conv.in_channels
    red_filter = old_weight[:, RED_CHANNEL : RED_CHANNEL + 1]
    new_weight = torch.cat([old_weight, red_filter.repeat(1, extra_channels, 1, 1)], dim=1)
    conv.weight = nn.Parameter(new_weight.clone(), requires_grad=conv.weight.requires_grad)
    conv.in_channels = in_chans
