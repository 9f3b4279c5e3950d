"""Test-time augmentation: average (or max) a model's probabilities over symmetries of the image.

HPA micrographs have no preferred orientation, so predictions should not change under flips or
90-degree rotations; averaging over them reduces the variance of a model that is not exactly
invariant. Rotations swap height and width, so "dihedral" on non-square images needs a model
that accepts any size (all timm CNNs with global pooling do).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from hpa.errors import HPAInputError

Transform = Callable[[torch.Tensor], torch.Tensor]

TTA_MODES = ("none", "flips", "dihedral")
TTA_REDUCTIONS = ("mean", "max")
_SPATIAL = (-2, -1)


def _identity(images: torch.Tensor) -> torch.Tensor:
    return images


def _hflip(images: torch.Tensor) -> torch.Tensor:
    return torch.flip(images, dims=(-1,))


def _vflip(images: torch.Tensor) -> torch.Tensor:
    return torch.flip(images, dims=(-2,))


def _hvflip(images: torch.Tensor) -> torch.Tensor:
    return torch.flip(images, dims=_SPATIAL)


def _dihedral(k: int, flip: bool) -> Transform:
    """Horizontal flip (if ``flip``) then rotation by ``k`` quarter turns."""

    def transform(images: torch.Tensor) -> torch.Tensor:
        flipped = _hflip(images) if flip else images
        return torch.rot90(flipped, k=k, dims=_SPATIAL)

    transform.__name__ = f"rot90_k{k}{'_hflip' if flip else ''}"
    return transform


def tta_transforms(mode: str) -> list[Transform]:
    """The image transforms of a TTA mode, identity first.

    "none": identity (1); "flips": identity, horizontal, vertical, both (4); "dihedral": the 8
    symmetries of the square, rot90 k=0..3 each without and with a horizontal flip.
    """
    if mode == "none":
        return [_identity]
    if mode == "flips":
        return [_identity, _hflip, _vflip, _hvflip]
    if mode == "dihedral":
        return [_dihedral(k, flip) for k in range(4) for flip in (False, True)]
    raise ValueError(f"unknown TTA mode {mode!r}; expected one of {TTA_MODES}")


def check_tta_options(mode: str, reduce: str) -> None:
    """Refuse unknown ``tta``/``tta_reduce`` settings before any work starts."""
    if mode not in TTA_MODES:
        raise HPAInputError(f"tta={mode!r} is not a TTA mode; choose one of {', '.join(TTA_MODES)}")
    if reduce not in TTA_REDUCTIONS:
        raise HPAInputError(
            f"tta_reduce={reduce!r} is not a reduction; choose one of {', '.join(TTA_REDUCTIONS)}"
        )


def predict_with_tta(
    model_fn: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    mode: str = "none",
    reduce: str = "mean",
) -> torch.Tensor:
    """Reduce ``model_fn``'s (B, 28) probabilities over the ``mode`` transforms of ``images``.

    ``images`` is a (B, C, H, W) batch of any dtype (uint8 for HPAModule); ``reduce`` is "mean" or
    "max" over transforms. Gradient mode and model train/eval state are left to the caller.
    """
    if reduce not in TTA_REDUCTIONS:
        raise ValueError(f"unknown TTA reduce {reduce!r}; expected one of {TTA_REDUCTIONS}")
    transforms = tta_transforms(mode)
    if images.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    outputs = torch.stack([model_fn(transform(images)) for transform in transforms])
    return outputs.mean(dim=0) if reduce == "mean" else outputs.amax(dim=0)
