"""Scores for each cell of an image from image-level predictions: Kaggle's 2021 single-cell task.

The 2021 task trains on image-level labels but scores one prediction per cell (cell mAP at mask
IoU 0.6, ``hpa.evaluation.cell_map``). A cell-scoring method turns one image's inputs into a
(K, C) array of probabilities, row ``k`` for the cell with label id ``k + 1``, ready for
``cell_submission.prediction_string`` and ``cell_map.CellMAP``:

- ``broadcast`` (``broadcast_scores``): every cell gets its image's class probabilities, the
  baseline of the competition. Right for the many HPA images whose cells all look alike, blind
  to the others.
- ``cam`` (``cam_scores``): the image probabilities, combined with each cell's own probability
  from the class activation maps pooled inside it (``hpa.models.activation_maps`` makes the
  maps; any per-class evidence maps in logit units will do).
- ``crops`` (``crops_scores``): each cell's own probabilities from a model of cell crops
  (hpa.data.cell_crop_datamodule), optionally blended with its image's.

``score_cells(method, ...)`` dispatches on the name (``CELL_METHODS``), so that a config value
``cells=...`` picks the method and an unknown name fails fast (``check_cell_method``).

Adding a method: write a function ``f(image_probabilities, num_cells, *, <its per-image
inputs>, <its options with defaults>)`` that returns (K, C) probabilities in [0, 1], and
register it in ``CELL_METHODS`` with the names of the per-image inputs it needs. Those inputs
are keyword arguments of ``score_cells`` (``cells``, ``class_maps``, ``cell_probabilities``: a
crop model's (K, C) output, computed upstream: this module imports no model). ``score_cells``
checks that the needed inputs were given and that every option is one the method takes.

This module is numpy (and cv2 for resizing) only; it knows nothing of torch or the models.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import NamedTuple

import cv2
import numpy as np

from hpa.core.errors import HPAInputError

CAM_WEIGHT = 0.2
"""How much of a cell's score its own evidence decides (``cam_scores``): 0 is ``broadcast``, 1
scores each cell on the class maps alone. Chosen on validation cells of both synthetic
generators (0.15 to 0.3 scored alike)."""

WORKING_SIZE = 512
"""The longest side, in pixels, of the label image that the maps are pooled over; larger label
images are downsampled (nearest neighbour) to it."""


# --------------------------------------------------------------------------------------------
# Methods
# --------------------------------------------------------------------------------------------


def broadcast_scores(image_probabilities: np.ndarray, num_cells: int) -> np.ndarray:
    """(K, C): row ``k`` is the image's (C,) class probabilities, for each of the K cells."""
    probabilities = _image_probabilities(image_probabilities)
    return np.tile(probabilities, (_num_cells(num_cells), 1))


def cam_scores(
    image_probabilities: np.ndarray,
    num_cells: int,
    *,
    class_maps: np.ndarray,
    cells: np.ndarray,
    weight: float = CAM_WEIGHT,
    working_size: int = WORKING_SIZE,
) -> np.ndarray:
    """(K, C) cell scores: the image probabilities and each cell's own evidence, combined.

    Inputs: ``image_probabilities`` (C,) of the image; ``class_maps`` (C, h, w) per-class
    evidence in logit units over the whole image (``hpa.models.activation_maps``: the maps'
    means are the image logits); ``cells`` (H, W) label image at the image's original size, 0 =
    background, cell ``k + 1`` = row ``k``; ``num_cells`` K, at least its largest id.

    1. Evidence ``e[k, c]``: the mean of class ``c``'s map over cell ``k``'s pixels
       (``pooled_cell_evidence``: maps resized bilinearly to the label image, downsampled to
       ``working_size``): the logit the model would give an image made of such pixels.
    2. The cell's own probability ``q[k, c] = sigmoid(e[k, c])``, on the same scale in every
       image, so that a cell without the class's evidence falls below the cells of other
       images that show it: what cell mAP, one ranking of all cells per class, rewards.
    3. ``score = p ** (1 - weight) * q ** weight``: ``weight`` (in [0, 1]) is the trust in the
       maps. At 0 every row is the image's probabilities (``broadcast``), at 1 each cell is
       scored on its own evidence. The image probability carries most of the signal (it pools
       every cell), the maps say which cells carry it; on both synthetic generators a small
       weight was best on validation cells (docs/results.md, "Single cells").

    Negative is a class like the others: its map says which cells show none of the patterns.
    A cell too small to keep a pixel at ``working_size`` is scored at its centroid. A cell id
    in 1..K without pixels gets the image's probabilities (it has no mask, so no submission
    writes it). The default weight was chosen on validation cells; tune it on yours.
    """
    probabilities = _image_probabilities(image_probabilities)
    num_classes = probabilities.size
    maps = _class_maps(class_maps, num_classes)
    num_cells = _num_cells(num_cells)
    if not 0.0 <= weight <= 1.0:
        raise HPAInputError(f"cam weight must be in [0, 1], got {weight}")

    evidence, present = pooled_cell_evidence(maps, cells, num_cells, working_size)
    cell_probabilities = np.tile(probabilities, (num_cells, 1))
    cell_probabilities[present] = 1.0 / (1.0 + np.exp(-evidence[present]))
    scores = probabilities ** (1.0 - weight) * cell_probabilities**weight
    return np.clip(scores, 0.0, 1.0)


def crops_scores(
    image_probabilities: np.ndarray,
    num_cells: int,
    *,
    cell_probabilities: np.ndarray,
    image_weight: float = 0.0,
) -> np.ndarray:
    """(K, C): ``(1 - image_weight) * cell_probabilities + image_weight * image_probabilities``.

    ``cell_probabilities`` (K, C): row ``k`` the crop model's probabilities of cell ``k + 1``
    (a cell without a crop: its image's). ``image_probabilities`` (C,): what the model says of
    the whole image (for a crop model, the largest probability over its cells). At 0, the
    default, each cell is scored on its own; at 1 every cell gets its image's, as
    ``broadcast``."""
    probabilities = _image_probabilities(image_probabilities)
    num_cells = _num_cells(num_cells)
    cell_probabilities = np.asarray(cell_probabilities, dtype=np.float64)
    if cell_probabilities.shape != (num_cells, probabilities.size):
        raise HPAInputError(
            f"cell probabilities must be ({num_cells}, {probabilities.size}), got shape "
            f"{cell_probabilities.shape}"
        )
    if not np.isfinite(cell_probabilities).all():
        raise HPAInputError("cell probabilities must be finite")
    if not 0.0 <= image_weight <= 1.0:
        raise HPAInputError(f"crops image_weight must be in [0, 1], got {image_weight}")
    scores = (1.0 - image_weight) * cell_probabilities + image_weight * probabilities
    return np.clip(scores, 0.0, 1.0)


def pooled_cell_evidence(
    class_maps: np.ndarray,
    cells: np.ndarray,
    num_cells: int,
    working_size: int = WORKING_SIZE,
) -> tuple[np.ndarray, np.ndarray]:
    """(evidence (K, C), present (K,)): each class map's mean over each cell, and which of the
    cells 1..K have pixels in ``cells``.

    The maps (C, h, w) cover the same field of view as the label image ``cells`` (H, W). The
    label image is downsampled with nearest neighbour (pixel centres, ``INTER_NEAREST_EXACT``)
    so that its longest side is at most ``working_size`` (never upsampled), and the maps are
    resized bilinearly to it; the means are one ``np.bincount`` per class, so a 2048 px label
    image costs a few milliseconds beyond reading it. A cell that loses every pixel in the
    downsampling (a few pixels at 2048 px) takes the maps' value at its centroid. Rows of
    absent cells are 0.
    """
    labels = _label_image(cells, num_cells)
    height, width = labels.shape
    scale = min(1.0, working_size / max(height, width))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST_EXACT)
    else:
        small = labels
    small_height, small_width = small.shape
    resized = cv2.resize(
        np.ascontiguousarray(class_maps.transpose(1, 2, 0)),
        (small_width, small_height),
        interpolation=cv2.INTER_LINEAR,
    ).reshape(small_height, small_width, -1)  # cv2 drops a single channel's axis

    present = np.bincount(labels.ravel(), minlength=num_cells + 1)[1:] > 0
    flat = small.ravel()
    area = np.bincount(flat, minlength=num_cells + 1)[1:]
    sums = np.stack(
        [
            np.bincount(flat, weights=resized[:, :, c].ravel(), minlength=num_cells + 1)[1:]
            for c in range(resized.shape[2])
        ],
        axis=1,
    )
    evidence = sums / np.maximum(area, 1)[:, None]

    lost = present & (area == 0)
    if lost.any():
        rows, columns = _centroids(labels, np.flatnonzero(lost) + 1)
        small_rows = np.clip(np.rint((rows + 0.5) * small_height / height - 0.5), 0, None)
        small_columns = np.clip(np.rint((columns + 0.5) * small_width / width - 0.5), 0, None)
        small_rows = np.minimum(small_rows.astype(np.intp), small_height - 1)
        small_columns = np.minimum(small_columns.astype(np.intp), small_width - 1)
        evidence[lost] = resized[small_rows, small_columns]
    return evidence, present


def _centroids(labels: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, columns) of the centroids of the cells ``ids`` of a label image; only their
    pixels are visited."""
    wanted = np.zeros(int(labels.max()) + 1, dtype=bool)
    wanted[ids] = True
    pixel_rows, pixel_columns = np.nonzero(wanted[labels])
    pixel_ids = labels[pixel_rows, pixel_columns]
    length = int(ids.max()) + 1
    counts = np.bincount(pixel_ids, minlength=length)[ids]
    rows = np.bincount(pixel_ids, weights=pixel_rows, minlength=length)[ids] / counts
    columns = np.bincount(pixel_ids, weights=pixel_columns, minlength=length)[ids] / counts
    return rows, columns


# --------------------------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------------------------


class CellMethod(NamedTuple):
    """A cell-scoring method: ``function(image_probabilities, num_cells, *, **inputs,
    **options)`` -> (K, C) probabilities, and the names of the per-image ``inputs`` (keyword
    arguments of ``score_cells``) it needs besides the image probabilities and K."""

    function: Callable[..., np.ndarray]
    inputs: tuple[str, ...]


CELL_METHODS: dict[str, CellMethod] = {
    "broadcast": CellMethod(broadcast_scores, ()),
    "cam": CellMethod(cam_scores, ("class_maps", "cells")),
    "crops": CellMethod(crops_scores, ("cell_probabilities",)),
}
"""The methods of ``score_cells`` (a config's ``cells=`` value), by name."""


def check_cell_method(method: str) -> CellMethod:
    """The registered method ``method``; HPAInputError listing the methods otherwise."""
    if method not in CELL_METHODS:
        raise HPAInputError(
            f"unknown cell-scoring method {method!r}; the methods are {', '.join(CELL_METHODS)}"
        )
    return CELL_METHODS[method]


def score_cells(
    method: str,
    image_probabilities: np.ndarray,
    num_cells: int,
    *,
    cells: np.ndarray | None = None,
    class_maps: np.ndarray | None = None,
    cell_probabilities: np.ndarray | None = None,
    **options: object,
) -> np.ndarray:
    """(K, C) scores of one image's cells by the method ``method`` (``CELL_METHODS``).

    ``image_probabilities`` (C,) and ``num_cells`` K go to every method; ``cells`` (the (H, W)
    label image), ``class_maps`` (C, h, w) and ``cell_probabilities`` (K, C) to the methods
    that need them; ``options`` are
    the method's own keyword arguments (``cam_scores``: ``weight``, ``working_size``).
    HPAInputError for an unknown method, a needed input that is missing, or an option the
    method does not take.
    """
    cell_method = check_cell_options(method, options)
    given = {"cells": cells, "class_maps": class_maps, "cell_probabilities": cell_probabilities}
    missing = [name for name in cell_method.inputs if given.get(name) is None]
    if missing:
        raise HPAInputError(f"cells={method} needs {', '.join(missing)} for each image")
    inputs = {name: given[name] for name in cell_method.inputs}
    return cell_method.function(image_probabilities, num_cells, **inputs, **options)


def check_cell_options(method: str, options: Mapping[str, object]) -> CellMethod:
    """The method ``method``; HPAInputError for an unknown method or an option it does not take
    (a config is checked with it before any data is read)."""
    cell_method = check_cell_method(method)
    parameters = inspect.signature(cell_method.function).parameters
    known = [
        name
        for name, parameter in parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY and name not in cell_method.inputs
    ]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise HPAInputError(
            f"cells={method} has no option(s) {', '.join(unknown)}; its options are "
            f"{', '.join(known) or 'none'}"
        )
    return cell_method


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------


def _image_probabilities(values: np.ndarray) -> np.ndarray:
    probabilities = np.asarray(values, dtype=np.float64)
    if probabilities.ndim != 1 or probabilities.size == 0:
        raise HPAInputError(
            f"image probabilities must be a (classes,) vector, got shape {probabilities.shape}"
        )
    if (
        not np.isfinite(probabilities).all()
        or (probabilities < 0).any()
        or (probabilities > 1).any()
    ):
        raise HPAInputError("image probabilities must be finite numbers in [0, 1]")
    return probabilities


def _class_maps(values: np.ndarray, num_classes: int) -> np.ndarray:
    maps = np.asarray(values, dtype=np.float32)
    if maps.ndim != 3 or maps.shape[0] != num_classes or 0 in maps.shape:
        raise HPAInputError(
            f"class maps must be ({num_classes}, h, w) for {num_classes} classes, got shape "
            f"{maps.shape}"
        )
    if not np.isfinite(maps).all():
        raise HPAInputError("class maps must be finite")
    return maps


def _num_cells(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise HPAInputError(f"num_cells must be a non-negative integer, got {value!r}")
    return int(value)


def _label_image(values: np.ndarray, num_cells: int) -> np.ndarray:
    """The label image as int32 (what cv2 resizes with nearest neighbour), ids in 0..K."""
    labels = np.asarray(values)
    if labels.ndim != 2 or labels.size == 0:
        raise HPAInputError(f"cells must be a 2-D label image, got shape {labels.shape}")
    if labels.dtype == bool or not np.issubdtype(labels.dtype, np.integer):
        raise HPAInputError(f"cells must hold integer cell ids, got dtype {labels.dtype}")
    smallest, largest = int(labels.min()), int(labels.max())
    if smallest < 0:
        raise HPAInputError(f"cells holds negative ids ({smallest}); 0 is the background")
    if largest > _num_cells(num_cells):
        raise HPAInputError(
            f"cells holds id {largest}, but there are {num_cells} cells (ids 1..{num_cells})"
        )
    if largest > np.iinfo(np.int32).max:
        raise HPAInputError(f"cells holds id {largest}, more than int32 ids can hold")
    return labels.astype(np.int32, copy=False)
