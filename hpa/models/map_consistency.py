"""Puzzle-CAM map consistency (Jo & Yu, 2021): sharper class activation maps from training.

Cells are scored by pooling the class activation maps (CAM) of an image model inside each cell
(``hpa.models.activation_maps``). A network trained on whole images only needs the most telling
part of an image to classify it, so its maps are blurred and cover few cells. Puzzle-CAM adds a
second view of every training image: the image is cut into ``tiles`` x ``tiles`` pieces, each
piece goes through the same backbone, and the pieces' class maps are put back together into one
map of the whole image. Training then adds

* the classification loss of the reassembled map's pooled logits (each piece must find its own
  evidence, with no context outside it), and
* the consistency term: the mean absolute difference between the reassembled class maps and the
  whole image's class maps, both after a ReLU as in the paper (Eq. 4, ``L_re``; only the positive
  evidence of a position is compared), so that the whole image's maps cover every piece's
  evidence.

The class maps of a GAP + linear head are ``CAM_c(x, y) = W_c . F(x, y) + b_c`` (bias included,
so their spatial mean is the image logit: ``class_maps``). The classifier is the same at every
position, so the maps of reassembled features are the reassembled maps of the pieces' features;
this module reassembles the maps (C channels) rather than the features (K channels, many more).

Everything here is plain torch: ``split_tiles`` and ``reassemble_tiles`` are exact inverses,
``class_maps`` and ``puzzle_losses`` take the features and the classifier, and ``gap_linear_head``
is the check, shared with ``hpa.models.activation_maps``, that a backbone has the head the maps
need. ``hpa.models.module.HPAModule`` uses them when ``map_consistency > 0``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from timm.layers import SelectAdaptivePool2d
from torch import nn

from hpa.core.errors import HPAInputError

AVERAGE_POOL_TYPES = ("avg", "fast", "fastavg")
"""``SelectAdaptivePool2d.pool_type`` values that are a plain global average."""

PUZZLE_L1 = "train/puzzle_l1"
"""The logged consistency term (mean absolute difference of the ReLU'd class maps)."""
PUZZLE_TILE_LOSS = "train/puzzle_tile_loss"
"""The logged classification loss of the reassembled (tiled) view."""
PUZZLE_IMAGE_LOSS = "train/puzzle_image_loss"
"""The logged classification loss of the whole image (what ``train/loss`` is without puzzles)."""


class PuzzleLosses(NamedTuple):
    """The two terms Puzzle-CAM adds to the whole image's classification loss.

    ``tile_loss``: the criterion of ``tile_logits`` against the image's target.
    ``consistency``: mean over (B, C, h, w) of ``|relu(image maps) - relu(reassembled maps)|``.
    ``tile_logits``: (B, C), the spatial mean of the reassembled maps (the mean of the pieces'
    own logits).
    """

    tile_loss: torch.Tensor
    consistency: torch.Tensor
    tile_logits: torch.Tensor


def gap_linear_head(backbone: nn.Module, name: str, needed_by: str) -> tuple[nn.Module, nn.Linear]:
    """The backbone's global average pool and its linear classifier; HPAInputError otherwise.

    ``name`` names the backbone in the message, ``needed_by`` the setting that needs the head
    (``"cells=cam"``, ``"model.map_consistency"``). timm's ResNets, DenseNets and EfficientNets
    pass (``global_pool`` a ``SelectAdaptivePool2d`` averaging, ``get_classifier()`` an
    ``nn.Linear``); the seed CNN (a 6 x 6 pool and an MLP), ConvNeXt (a norm after the pool)
    and max or avg+max pools do not.
    """
    classifier = backbone.get_classifier() if hasattr(backbone, "get_classifier") else None
    pool = getattr(backbone, "global_pool", None)
    if isinstance(pool, SelectAdaptivePool2d):
        is_average = pool.pool_type.lower() in AVERAGE_POOL_TYPES
    else:
        is_average = isinstance(pool, nn.AdaptiveAvgPool2d) and pool.output_size in (1, (1, 1))
    if not isinstance(classifier, nn.Linear) or not is_average:
        raise HPAInputError(
            f"backbone {name} has no global-average-pool + linear head "
            f"(classifier: {type(classifier).__name__}, global pool: {pool!r}); {needed_by} "
            "needs a GAP+linear head (resnet*, densenet*, efficientnet*): use one of those "
            f"backbones or do without {needed_by}"
        )
    return pool, classifier


def check_puzzle_backbone(backbone: nn.Module, name: str) -> None:
    """HPAInputError unless ``backbone`` can give Puzzle-CAM its feature maps and class maps:
    a GAP + linear head and timm's ``forward_features``/``forward_head``."""
    gap_linear_head(backbone, name, "model.map_consistency")
    if not (hasattr(backbone, "forward_features") and hasattr(backbone, "forward_head")):
        raise HPAInputError(
            f"backbone {name} has no forward_features/forward_head (timm's feature map and "
            "head); model.map_consistency needs a timm GAP+linear model"
        )


def check_tile_count(tiles: int) -> None:
    """HPAInputError unless ``tiles`` (pieces along each side) is an integer of at least 2."""
    if isinstance(tiles, bool) or not isinstance(tiles, int) or tiles < 2:
        raise HPAInputError(
            f"model.map_consistency_tiles={tiles!r}: the number of pieces along each side must "
            "be an integer of at least 2"
        )


def check_tiles(image_size: int, tiles: int) -> None:
    """HPAInputError unless ``tiles`` is at least 2 and divides ``image_size``: what a run can
    check before it reads data (``data.image_size``, ``model.map_consistency_tiles``)."""
    check_tile_count(tiles)
    if image_size % tiles:
        below = image_size - image_size % tiles
        raise HPAInputError(
            f"Puzzle-CAM cuts each image into {tiles} x {tiles} equal pieces, but its size "
            f"{image_size} is not divisible by {tiles} (model.map_consistency_tiles); use a "
            f"data.image_size that is a multiple of {tiles} (e.g. {below} or {below + tiles}; "
            f"a multiple of {tiles} x 32 = {tiles * 32} keeps the maps exact for a stride-32 "
            "backbone)"
        )


def split_tiles(images: torch.Tensor, tiles: int) -> torch.Tensor:
    """(B, Ch, S, S) -> (B * tiles², Ch, S / tiles, S / tiles): each image's pieces in row-major
    order (piece ``row * tiles + col`` of image ``b`` at index ``b * tiles² + row * tiles +
    col``). HPAInputError when ``S`` is not divisible by ``tiles`` (or the images not square)."""
    if images.ndim != 4:
        raise HPAInputError(f"Puzzle-CAM needs (B, C, S, S) images, not {tuple(images.shape)}")
    batch, channels, height, width = images.shape
    if height != width:
        raise HPAInputError(f"Puzzle-CAM needs square images, not {height} x {width}")
    check_tiles(height, tiles)
    size = height // tiles
    pieces = images.reshape(batch, channels, tiles, size, tiles, size)
    return pieces.permute(0, 2, 4, 1, 3, 5).reshape(batch * tiles * tiles, channels, size, size)


def reassemble_tiles(maps: torch.Tensor, tiles: int) -> torch.Tensor:
    """(B * tiles², C, h, w) pieces' maps, in ``split_tiles`` order -> (B, C, tiles*h, tiles*w):
    the inverse of ``split_tiles``."""
    pieces, channels, height, width = maps.shape
    if pieces % (tiles * tiles):
        raise HPAInputError(
            f"{pieces} pieces cannot be reassembled into images of {tiles} x {tiles} pieces"
        )
    batch = pieces // (tiles * tiles)
    grid = maps.reshape(batch, tiles, tiles, channels, height, width)
    return grid.permute(0, 3, 1, 4, 2, 5).reshape(batch, channels, tiles * height, tiles * width)


def class_maps(features: torch.Tensor, classifier: nn.Linear) -> torch.Tensor:
    """(B, K, h, w) feature maps -> (B, C, h, w) class logit maps ``W_c . F(x, y) + b_c``; for a
    GAP + linear head their spatial mean is the logits."""
    maps = torch.einsum("bkhw,ck->bchw", features, classifier.weight.to(features.dtype))
    if classifier.bias is not None:
        maps = maps + classifier.bias.to(maps.dtype).view(1, -1, 1, 1)
    return maps


def puzzle_losses(
    image_features: torch.Tensor,
    tile_features: torch.Tensor,
    classifier: nn.Linear,
    tiles: int,
    target: torch.Tensor,
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> PuzzleLosses:
    """Puzzle-CAM's tile classification loss and map consistency (see the module docstring).

    ``image_features``: (B, K, h, w), the backbone's feature map of the whole images;
    ``tile_features``: (B * tiles², K, h', w') of their ``split_tiles`` pieces; ``classifier``
    the backbone's linear classifier; ``target`` (B, C) and ``criterion`` the module's. The
    pieces' maps must reassemble to the whole image's map size (they do when the image size is a
    multiple of ``tiles`` x the backbone's stride): HPAInputError otherwise.
    """
    image_maps = class_maps(image_features, classifier)
    tile_maps = reassemble_tiles(class_maps(tile_features, classifier), tiles)
    if tile_maps.shape != image_maps.shape:
        raise HPAInputError(
            f"Puzzle-CAM: the {tiles} x {tiles} pieces' class maps reassemble to "
            f"{tuple(tile_maps.shape[2:])}, the whole image's map is "
            f"{tuple(image_maps.shape[2:])}; use a data.image_size that is a multiple of "
            f"{tiles} x the backbone's stride (e.g. {tiles * 32} x n for a stride-32 backbone)"
        )
    tile_logits = tile_maps.mean(dim=(2, 3))
    consistency = (image_maps.float().relu() - tile_maps.float().relu()).abs().mean()
    return PuzzleLosses(criterion(tile_logits, target), consistency, tile_logits)
