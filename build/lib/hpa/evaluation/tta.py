"""Test-time augmentation: average (or max) a model's probabilities over symmetries of the image.

HPA micrographs have no preferred orientation, so predictions should not change under flips or
90-degree rotations; averaging over them reduces the variance of a model that is not exactly
invariant. Rotations swap height and width, so "dihedral" on non-square images needs a model
that accepts any size (all timm CNNs with global pooling do).

The transforms and the reduction take torch tensors and numpy arrays alike: the ONNX backend of
``hpa.predict`` runs them on numpy batches in a process without torch, so this module imports
torch only to reduce tensors it is given.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from hpa.errors import HPAInputError

Transform = Callable[[Any], Any]
"""A (B, C, H, W) torch tensor or numpy array -> the same kind of batch, transformed."""

TTA_MODES = ("none", "flips", "dihedral")
TTA_REDUCTIONS = ("mean", "max")
_SPATIAL = (-2, -1)


def _flip(images, axes: tuple[int, ...]):
    if isinstance(images, np.ndarray):
        return np.flip(images, axis=axes)
    return images.flip(axes)  # torch.flip


def _identity(images):
    return images


def _hflip(images):
    return _flip(images, (-1,))


def _vflip(images):
    return _flip(images, (-2,))


def _hvflip(images):
    return _flip(images, _SPATIAL)


def _dihedral(k: int, flip: bool) -> Transform:
    """Horizontal flip (if ``flip``) then rotation by ``k`` quarter turns (counter-clockwise, from
    the height axis towards the width axis, in torch and numpy alike)."""

    def transform(images):
        flipped = _hflip(images) if flip else images
        if isinstance(flipped, np.ndarray):
            return np.rot90(flipped, k=k, axes=_SPATIAL)
        return flipped.rot90(k, _SPATIAL)  # torch.rot90

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
    model_fn: Callable[[Any], Any],
    images: Any,
    mode: str = "none",
    reduce: str = "mean",
) -> Any:
    """Reduce ``model_fn``'s (B, 28) probabilities over the ``mode`` transforms of ``images``.

    ``images`` is a (B, C, H, W) torch tensor or numpy array of any dtype (uint8 for HPAModule and
    the ONNX models); ``model_fn`` returns the same kind; ``reduce`` is "mean" or "max" over
    transforms. Gradient mode and model train/eval state are left to the caller. Numpy batches
    are transformed as views (negative strides): ``model_fn`` copies them if it must.
    """
    if reduce not in TTA_REDUCTIONS:
        raise ValueError(f"unknown TTA reduce {reduce!r}; expected one of {TTA_REDUCTIONS}")
    transforms = tta_transforms(mode)
    if images.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    outputs = [model_fn(transform(images)) for transform in transforms]
    if isinstance(outputs[0], np.ndarray):
        stacked = np.stack(outputs)
        return stacked.mean(axis=0) if reduce == "mean" else stacked.max(axis=0)
    import torch  # loaded already: the model returned tensors

    stacked = torch.stack(outputs)
    return stacked.mean(dim=0) if reduce == "mean" else stacked.amax(dim=0)
