"""Test-time augmentation: average (or max) a model's probabilities over symmetries of the image,
and over crops of it.

HPA micrographs have no preferred orientation, so predictions should not change under flips or
90-degree rotations; averaging over them reduces the variance of a model that is not exactly
invariant. Rotations swap height and width, so "dihedral" on non-square images needs a model
that accepts any size (all timm CNNs with global pooling do).

"dihedral_crops" is for a model trained on crops (``data.load_size``): it is given the whole
image read at the load size and takes the 8 symmetries of each of ``CROP_POSITIONS`` crops of the
trained size, 40 copies (bestfitting, 1st in 2018, took the maximum over the 8 symmetries of
random crops). ``tta_input`` says which images its loader gives instead of the centre crop.

The transforms and the reduction take torch tensors and numpy arrays alike: the ONNX backend of
``hpa.predict`` runs them on numpy batches in a process without torch, so this module imports
torch only to reduce tensors it is given.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from hpa.core.errors import HPAInputError

log = logging.getLogger(__name__)

Transform = Callable[[Any], Any]
"""A (B, C, H, W) torch tensor or numpy array -> the same kind of batch, transformed."""

TTA_MODES = ("none", "flips", "dihedral")
"""The modes made of symmetries of the image alone."""
CROP_TTA_MODES = {"dihedral_crops": "dihedral"}
"""The modes that also take crops, and the symmetries each applies to every crop."""
ALL_TTA_MODES = (*TTA_MODES, *CROP_TTA_MODES)
TTA_REDUCTIONS = ("mean", "max")
CROP_POSITIONS = ("center", "top_left", "top_right", "bottom_left", "bottom_right")
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
    if mode in CROP_TTA_MODES:
        raise ValueError(f"TTA mode {mode!r} takes crops: crop_transforms gives its transforms")
    raise ValueError(f"unknown TTA mode {mode!r}; expected one of {ALL_TTA_MODES}")


def crop_windows(height: int, width: int, size: int) -> list[tuple[int, int]]:
    """(top, left) of the ``size`` x ``size`` TTA crops of a ``height`` x ``width`` image, in the
    order of ``CROP_POSITIONS`` (the centre one as albumentations' CenterCrop places it), repeated
    windows dropped: an image of the crop size has one."""
    if size > min(height, width):
        raise ValueError(f"cannot take {size} px crops of {height} x {width} images")
    bottom, right = height - size, width - size
    corners = {
        "center": (bottom // 2, right // 2),
        "top_left": (0, 0),
        "top_right": (0, right),
        "bottom_left": (bottom, 0),
        "bottom_right": (bottom, right),
    }
    return list(dict.fromkeys(corners[position] for position in CROP_POSITIONS))


def _crop(top: int, left: int, size: int) -> Transform:
    def transform(images):
        return images[..., top : top + size, left : left + size]

    transform.__name__ = f"crop_{top}_{left}_{size}"
    return transform


def center_crop(images, size: int):
    """The centre ``size`` x ``size`` crop of a (..., H, W) batch (the first TTA crop)."""
    top, left = crop_windows(images.shape[-2], images.shape[-1], size)[0]
    return _crop(top, left, size)(images)


def crop_transforms(mode: str, height: int, width: int, crop_size: int) -> list[Transform]:
    """The transforms of a crop mode on ``height`` x ``width`` images: each crop of
    ``crop_windows``, then each symmetry of the mode (``CROP_TTA_MODES``)."""
    symmetries = tta_transforms(CROP_TTA_MODES[mode])
    transforms = []
    for top, left in crop_windows(height, width, crop_size):
        crop = _crop(top, left, crop_size)
        for symmetry in symmetries:
            transforms.append(lambda images, crop=crop, symmetry=symmetry: symmetry(crop(images)))
    return transforms


def check_tta_options(mode: str, reduce: str, crop_size: int | None = None) -> None:
    """Refuse unknown ``tta``/``tta_reduce`` settings, and a crop mode without its crop size,
    before any work starts."""
    if mode not in ALL_TTA_MODES:
        raise HPAInputError(
            f"tta={mode!r} is not a TTA mode; choose one of {', '.join(ALL_TTA_MODES)}"
        )
    if reduce not in TTA_REDUCTIONS:
        raise HPAInputError(
            f"tta_reduce={reduce!r} is not a reduction; choose one of {', '.join(TTA_REDUCTIONS)}"
        )
    if mode in CROP_TTA_MODES and crop_size is None:
        raise HPAInputError(
            f"tta={mode} takes crops of the size the model was trained at, from the whole images: "
            "an evaluation option (hpa-eval, hpa-predict, hpa-average), not one of training"
        )


@dataclass(frozen=True)
class TTAInput:
    """What the evaluation loader gives a TTA mode: images read at ``load_size`` (None: at
    ``image_size``) and centre-cropped to ``image_size``; ``crop_size`` is the module's
    ``tta_crop_size`` (None but for a crop mode)."""

    image_size: int
    load_size: int | None
    crop_size: int | None


def tta_input(mode: str, image_size: int, load_size: int | None) -> TTAInput:
    """The loader sizes of TTA ``mode`` for a model trained on ``image_size`` images read at
    ``load_size``: a crop mode takes its own crops of ``image_size`` from the whole image, so
    its loader gives the image uncropped, at ``load_size``; other modes get the centre crop."""
    if mode not in CROP_TTA_MODES:
        return TTAInput(image_size, load_size, None)
    if load_size is None or load_size == image_size:
        log.warning(
            "tta=%s on a model trained on whole images (no data.load_size): its crops are the "
            "image itself, the same as tta=%s",
            mode,
            CROP_TTA_MODES[mode],
        )
    return TTAInput(load_size or image_size, None, image_size)


def predict_with_tta(
    model_fn: Callable[[Any], Any],
    images: Any,
    mode: str = "none",
    reduce: str = "mean",
    crop_size: int | None = None,
) -> Any:
    """Reduce ``model_fn``'s (B, classes) probabilities over the ``mode`` transforms of ``images``.

    ``images`` is a (B, C, H, W) torch tensor or numpy array of any dtype (uint8 for HPAModule and
    the ONNX models); ``model_fn`` returns the same kind; ``reduce`` is "mean" or "max" over
    transforms; ``crop_size`` is the size of the crops of a crop mode. Gradient mode and model
    train/eval state are left to the caller. Numpy batches are transformed as views (negative
    strides): ``model_fn`` copies them if it must.
    """
    if reduce not in TTA_REDUCTIONS:
        raise ValueError(f"unknown TTA reduce {reduce!r}; expected one of {TTA_REDUCTIONS}")
    if images.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    if mode in CROP_TTA_MODES:
        if crop_size is None:
            raise ValueError(f"TTA mode {mode!r} needs a crop_size")
        transforms = crop_transforms(mode, images.shape[-2], images.shape[-1], crop_size)
    else:
        transforms = tta_transforms(mode)
    outputs = [model_fn(transform(images)) for transform in transforms]
    if isinstance(outputs[0], np.ndarray):
        stacked = np.stack(outputs)
        return stacked.mean(axis=0) if reduce == "mean" else stacked.max(axis=0)
    import torch  # loaded already: the model returned tensors

    stacked = torch.stack(outputs)
    return stacked.mean(dim=0) if reduce == "mean" else stacked.amax(dim=0)
