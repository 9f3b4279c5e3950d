"""A second synthetic single-cell set (Kaggle HPA 2021 layout), written apart from the project's.

Why: cell-scoring methods are tuned on the project's generator (hpa.data.synthetic.cells), so a
score there may reward its quirks. This generator shares no code with it and draws other cell
shapes and other green patterns from the same biology; a method that only works on one of them
has learnt the generator, not the task.

How it differs from the project's generator:

- Cells: Poisson-disk seed points, each the centre of an ellipse of random elongation and
  orientation (partly aligned with an image-wide flow, as in a confluent culture) whose radius is
  perturbed by low harmonics. A pixel belongs to the cell whose outline is nearest relative to its
  own size (a multiplicatively weighted, anisotropic tessellation): neighbours meet on curved
  borders, and a smooth "confluence" field leaves gaps where outlines do not reach. Cells are
  cut by the image border. About 6-20 cells per image, whatever its side.
- Nuclei (blue): irregular ellipses off the cell centre along its long axis, with darker nucleoli.
- Red (microtubules): streaks radiating from the nucleus; yellow (ER): a reticular mesh (zero
  crossings of band-pass noise) fading away from the nucleus. Both dim where cells meet.
- Green: per cell, one rendering of each of the 18 localisation classes (``PATTERNS``).
- Labels: an image draws 1-3 classes (flattened frequencies); each class is shown by a random
  30-100 % of the cells; cells showing none are Negative; ~10 % of images are wholly Negative.

Layout under ROOT (what ``data=hpa2021 data.root=ROOT data.cell_truth=ROOT/cell_truth`` reads)::

    train.csv, train/{ID}_{red,green,blue,yellow}.png      ID,Label ("|"-joined, ascending)
    test/{ID}_{color}.png, sample_submission.csv           when num_test > 0
    cell_truth/{ID}_cells.png, cell_truth/cells.csv        uint16 cell labels; ID,cell_id,Label
    alt_cell_set.json                                      the settings, written last

    python -m benchmarks.alt_cells ROOT --num-train 600 --num-test 150 --seed 0
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from skimage.measure import label as connected_regions

from hpa.core.errors import HPAInputError
from hpa.core.io import move_folder_into_place
from hpa.core.labels import CHANNELS, HPA2021

log = logging.getLogger("benchmarks.alt_cells")

MANIFEST_NAME = "alt_cell_set.json"
FORMAT_VERSION = 1
"""Bump whenever equal settings would draw different files."""
DEFAULT_SIZES: tuple[int, ...] = (256, 320, 384)
MIN_SIZE = 96
NEGATIVE = HPA2021.class_names.index("Negative")
NEGATIVE_IMAGE_FRACTION = 0.1
SPLITS = {"train": 0, "test": 1}

# Rough class frequencies of the 2021 train set, flattened (power 0.35) so that even Mitotic
# spindle is drawn by ~2 % of the images. A misspelt name fails at import.
# fmt: off
_FREQUENCIES = {
    "Nucleoplasm": 88, "Nuclear membrane": 11, "Nucleoli": 19, "Nucleoli fibrillar center": 10,
    "Nuclear speckles": 19, "Nuclear bodies": 25, "Endoplasmic reticulum": 11,
    "Golgi apparatus": 21, "Intermediate filaments": 10, "Actin filaments": 6, "Microtubules": 6,
    "Mitotic spindle": 1.3, "Centrosome": 14, "Plasma membrane": 36, "Mitochondria": 29,
    "Aggresome": 3, "Cytosol": 60, "Vesicles and punctate cytosolic patterns": 25,
}
# fmt: on
_WEIGHTS = np.zeros(NEGATIVE)
for _name, _count in _FREQUENCIES.items():
    _WEIGHTS[HPA2021.class_names.index(_name)] = _count**0.35
CLASS_PROBABILITIES = _WEIGHTS / _WEIGHTS.sum()

# noisy channels barely compress: Huffman-only coding is the fastest and about the smallest
_PNG = [
    cv2.IMWRITE_PNG_COMPRESSION,
    1,
    cv2.IMWRITE_PNG_STRATEGY,
    cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY,
]
_MASK_PNG = [cv2.IMWRITE_PNG_COMPRESSION, 1]


# ----------------------------------------------------------------------------- noise and shapes
def _blur(plane: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(plane, (0, 0), sigmaX=max(sigma, 0.3), borderType=cv2.BORDER_REFLECT)


def _noise(shape: tuple[int, int], sigma: float, rng) -> np.ndarray:
    """Smooth Gaussian noise of correlation length ``sigma`` px, zero mean, unit variance.
    Drawn at a coarser grid and enlarged when smooth enough (a wide blur is slow)."""
    factor = max(1, int(sigma // 3))
    coarse = (-(-shape[0] // factor), -(-shape[1] // factor))
    field = _blur(rng.standard_normal(coarse, dtype=np.float32), sigma / factor)
    if factor > 1:
        field = cv2.resize(field, shape[::-1], interpolation=cv2.INTER_LINEAR)
    return (field - field.mean()) / (field.std() + 1e-6)


def _band(shape: tuple[int, int], fine: float, coarse: float, rng) -> np.ndarray:
    """Band-pass noise (difference of Gaussians), unit variance: blobs some ``fine`` px across."""
    white = rng.standard_normal(shape, dtype=np.float32)
    field = _blur(white, fine) - _blur(white, coarse)
    return field / (field.std() + 1e-6)


def _direction(dx: np.ndarray, dy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distance, unit direction as a complex number) of offsets; angles never leave the complex
    plane, so no trigonometry is needed on whole images."""
    distance = np.hypot(dx, dy)
    inverse = 1 / np.maximum(distance, 1e-6)
    z = (dx * inverse + 1j * (dy * inverse)).astype(np.complex64, copy=False)
    z[distance == 0] = 1
    return distance, z


def _shapes(n: int, mean_radius, aspect, orient, wobble: float, rng) -> dict[str, np.ndarray]:
    """n outlines: ellipses (semi-axes a >= b, turned by ``orient``) with harmonics 2-4 of
    relative amplitude ~``wobble`` (``coef``, complex: amplitude and phase)."""
    amplitude = rng.normal(0, wobble, (n, 3)) / np.array([1.0, 1.6, 2.2])
    phase = rng.uniform(0, 2 * np.pi, (n, 3))
    return {
        "a": (mean_radius * np.sqrt(aspect)).astype(np.float32),
        "b": (mean_radius / np.sqrt(aspect)).astype(np.float32),
        "orient": np.asarray(orient, np.float32),
        "turn": np.exp(-1j * np.asarray(orient)).astype(np.complex64),
        "coef": (amplitude * np.exp(1j * phase)).astype(np.complex64),
    }


def _radius(shapes: dict[str, np.ndarray], rows, z: np.ndarray) -> np.ndarray:
    """Radius of the outlines ``rows`` (an index broadcast against ``z``) in directions ``z``."""
    w = z * shapes["turn"][rows]
    a, b = shapes["a"][rows], shapes["b"][rows]
    ellipse = a * b / np.sqrt((b * w.real) ** 2 + (a * w.imag) ** 2)
    coef, z2 = shapes["coef"], z * z
    wobble = z2 * (coef[:, 0][rows] + z * coef[:, 1][rows] + z2 * coef[:, 2][rows])
    return ellipse * (1 + wobble.real)


_BACKGROUND = {"a": 1, "b": 1, "orient": 0, "turn": 1, "coef": 0, "x": -1e4, "y": -1e4}


def _with_background(shapes: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Prepend a row for label 0 (a unit shape far away), so that ``shapes[key][labels]`` works."""
    return {
        key: np.concatenate([np.full((1, *value.shape[1:]), _BACKGROUND[key], value.dtype), value])
        for key, value in shapes.items()
    }


def _take(shapes: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    return {key: value[rows] for key, value in shapes.items()}


def _poisson_disk(size: int, count: int, spacing: float, rng) -> np.ndarray:
    """Up to ``count`` (x, y) points at least ``spacing`` apart, in from the border so that
    every nucleus is (mostly) in view, while the cells around them may be cut."""
    candidates = rng.uniform(0.07 * size, 0.93 * size, (15 * count, 2)).astype(np.float32)
    gap = np.hypot(*(candidates[:, None] - candidates[None]).transpose(2, 0, 1))
    free = np.ones(len(candidates), bool)
    kept: list[int] = []
    for i in range(len(candidates)):
        if free[i]:
            kept.append(i)
            if len(kept) == count:
                break
            free &= gap[i] >= spacing
    return candidates[kept]


# ----------------------------------------------------------------------------- cell layout
@dataclass
class Layout:
    """The cells of one image. Per-cell arrays have K + 1 rows (row 0 for the background), so
    ``array[labels]`` spreads them over the pixels; per-pixel maps refer to the pixel's cell."""

    unit: float  # px per feature unit: fine structures scale with the cells
    labels: np.ndarray  # int32, 0 background, cells 1..K
    reach: np.ndarray  # distance from the cell's seed relative to its outline (1 on it)
    dx: np.ndarray  # offset from the own nucleus centre, px
    dy: np.ndarray
    z: np.ndarray  # direction from the own nucleus centre (complex, unit)
    rho: np.ndarray  # distance from the nucleus centre relative to its rim (1 on it)
    rim: np.ndarray  # the nucleus radius in this pixel's direction, px
    edge: np.ndarray  # distance to the cell's border (a neighbour or the background), px
    nucleus: np.ndarray  # bool
    cell: dict[str, np.ndarray]  # each cell's outline (``_shapes``)
    nuc: dict[str, np.ndarray]  # each nucleus's outline, "x", "y" its centre, "size" its radius
    nucleoli: np.ndarray | None = None  # 0..1 map of the nucleoli (dark in blue)
    nucleolus_xyr: np.ndarray | None = None  # (K + 1, 4, 3) centres and radii (0: no nucleolus)

    @property
    def count(self) -> int:
        return len(self.cell["a"]) - 1

    def per_cell(self, values: np.ndarray) -> np.ndarray:
        """(K,) values of the cells spread over their pixels (0 on the background)."""
        return np.concatenate([[0.0], values]).astype(np.float32)[self.labels]

    def beyond_rim(self) -> np.ndarray:
        """Distance (px) out from the own nucleus rim; 0 inside the nucleus."""
        return np.maximum(self.rho - 1, 0) * self.rim


def _tessellate(size: int, cell: dict, seeds: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    """(owner 1..n or 0, relative reach): each pixel goes to the cell whose outline is nearest
    relative to its size (smallest distance / outline radius), if that ratio is below a smooth
    confluence threshold around 1 (else it is background)."""
    best = np.full((size, size), np.inf, np.float32)
    owner = np.zeros((size, size), np.int32)
    for i, (x, y) in enumerate(seeds):
        half = 1.35 * cell["a"][i] * (1 + np.abs(cell["coef"][i]).sum())
        x0, x1 = max(0, int(x - half)), min(size, int(x + half) + 1)
        y0, y1 = max(0, int(y - half)), min(size, int(y + half) + 1)
        ox = np.arange(x0, x1, dtype=np.float32)[None] - x
        oy = np.arange(y0, y1, dtype=np.float32)[:, None] - y
        distance, z = _direction(ox, oy)
        reach = distance / _radius(cell, i, z)
        view = best[y0:y1, x0:x1]
        closer = reach < view
        view[closer] = reach[closer]
        owner[y0:y1, x0:x1][closer] = i + 1
    threshold = 1 + 0.15 * np.clip(_noise((size, size), size / 10, rng), -1.6, 1.6)
    return np.where(best < threshold, owner, 0), best


def _edge_distance(labels: np.ndarray) -> np.ndarray:
    """Distance of each cell pixel to the nearest pixel of another cell or the background; the
    image border is no edge (a cut cell goes on beyond it)."""
    padded = np.pad(labels, 1, mode="edge")
    inner = (labels > 0) & (padded[:-2, 1:-1] == labels) & (padded[2:, 1:-1] == labels)
    inner &= (padded[1:-1, :-2] == labels) & (padded[1:-1, 2:] == labels)
    return cv2.distanceTransform(inner.astype(np.uint8), cv2.DIST_L2, 3)


def _place(labels: np.ndarray, cell: dict, nuc: dict, unit: float) -> Layout:
    """The per-pixel maps of cells ``labels`` (shapes with a background row)."""
    grid = np.arange(labels.shape[0], dtype=np.float32)
    dx = grid[None] - nuc["x"][labels].astype(np.float32)
    dy = grid[:, None] - nuc["y"][labels].astype(np.float32)
    distance, z = _direction(dx, dy)
    rim = _radius(nuc, labels, z).astype(np.float32)
    rho = (distance / rim).astype(np.float32)
    layout = Layout(unit, labels, np.zeros(1), dx, dy, z, rho, rim, rho, rho > 0, cell, nuc)
    _settle(layout)  # sets the edge and nucleus maps (placeholders above)
    return layout


def _settle(layout: Layout) -> None:
    """Edges and nuclei of ``layout.labels``; a nucleus keeps clear of its cell's border."""
    layout.rho[layout.labels == 0] = np.inf
    layout.edge = _edge_distance(layout.labels)
    layout.nucleus = (layout.rho < 1) & (layout.edge > 2.0 * layout.unit)


def build_layout(size: int, rng: np.random.Generator) -> Layout:
    """Draw the cells and nuclei of one ``size`` x ``size`` image (module doc)."""
    target = int(rng.integers(7, 21))  # a few are lost below: 6-20 cells
    spacing = size / np.sqrt(target)
    seeds = _poisson_disk(size, target, 0.72 * spacing, rng)
    n = len(seeds)
    orient = rng.uniform(0, np.pi) + rng.normal(0, 0.7, n)  # neighbours roughly aligned
    mean_radius = 0.6 * spacing * rng.uniform(0.85, 1.2, n)
    cell = _shapes(n, mean_radius, rng.uniform(1.0, 2.0, n), orient, 0.07, rng)
    nuc_aspect = rng.uniform(1.0, 1.5, n)
    nuc_mean = cell["b"] * rng.uniform(0.45, 0.58, n) * np.sqrt(nuc_aspect)
    nuc = _shapes(n, nuc_mean, nuc_aspect, orient + rng.normal(0, 0.3, n), 0.05, rng)
    room = np.maximum(0.85 * cell["a"] - nuc["a"], 0)  # off-centre along the long axis
    along = np.clip(rng.uniform(-0.3, 0.3, n) * cell["a"], -room, room)
    nuc["x"], nuc["y"] = seeds[:, 0] + along * np.cos(orient), seeds[:, 1] + along * np.sin(orient)
    unit = float(np.clip(0.6 * spacing / 40, 0.8, 2.2))
    owner, reach = _tessellate(size, cell, seeds, rng)

    # keep the piece of each cell that holds its nucleus centre; drop cells whose nucleus is
    # mostly lost (to a neighbour, or past the border): a segmenter could not find them
    pieces = connected_regions(owner, background=0, connectivity=1)
    cx, cy = np.round(nuc["x"]).astype(int), np.round(nuc["y"]).astype(int)
    in_view = (cx >= 0) & (cx < size) & (cy >= 0) & (cy < size)
    cx, cy = np.clip(cx, 0, size - 1), np.clip(cy, 0, size - 1)
    home = np.where(in_view & (owner[cy, cx] == np.arange(1, n + 1)), pieces[cy, cx], 0)
    owner = np.where(np.isin(pieces, home[home > 0]), owner, 0)
    layout = _place(owner, _with_background(cell), _with_background(nuc), unit)
    visible = np.bincount(owner[layout.nucleus], minlength=n + 1)[1:]
    keep = np.flatnonzero(visible >= 0.5 * np.pi * nuc["a"] * nuc["b"])
    relabel = np.zeros(n + 1, np.int32)
    relabel[keep + 1] = np.arange(1, len(keep) + 1)
    layout.labels = relabel[owner]
    layout.cell = _with_background(_take(cell, keep))
    layout.nuc = _with_background(_take(nuc, keep))
    layout.nuc["size"] = np.sqrt(layout.nuc["a"] * layout.nuc["b"])
    _settle(layout)
    layout.reach = np.where(layout.labels > 0, reach, 2).astype(np.float32)
    _add_nucleoli(layout, rng)
    return layout


def _add_nucleoli(layout: Layout, rng) -> None:
    """1-4 nucleoli per nucleus, inside its inner half: a map, and their (x, y, r)."""
    rows = layout.count + 1
    count = rng.integers(1, 5, rows)
    rho = rng.uniform(0, 0.55, (rows, 4))
    radius = rng.uniform(0.13, 0.22, (rows, 4)) * layout.nuc["size"][:, None]
    layout.nucleolus_xyr = _polar_spots(layout, count, 4, rho, radius, rng)
    layout.nucleoli = _blobs(layout, layout.nucleolus_xyr, soft=True) * layout.nucleus


def _polar_spots(layout: Layout, count, slots: int, rho, radius, rng, z=None) -> np.ndarray:
    """(K + 1, M, 3) spots (x, y, r) at relative distances ``rho`` from each nucleus centre
    (beyond its rim when > 1), in random directions or ``z``; ``count[k]`` of the ``slots`` in
    cell k, the other slots radius 0."""
    rows = layout.count + 1
    if z is None:
        z = np.exp(1j * rng.uniform(0, 2 * np.pi, (rows, slots))).astype(np.complex64)
    index = np.arange(rows)[:, None]
    distance = np.broadcast_to(rho, (rows, slots)) * _radius(layout.nuc, index, z)
    radius = np.array(np.broadcast_to(radius, (rows, slots)), np.float32)
    radius[np.arange(slots)[None] >= np.broadcast_to(count, rows)[:, None]] = 0
    x = layout.nuc["x"][:, None] + distance * z.real
    y = layout.nuc["y"][:, None] + distance * z.imag
    return np.stack([x, y, radius], axis=-1).astype(np.float32)


def _blobs(layout: Layout, xyr: np.ndarray, soft: bool = False) -> np.ndarray:
    """The max over each cell's own spots ``xyr`` (K + 1, M, 3), on its pixels only:
    flat-topped discs (``soft``) or Gaussian dots of radius r."""
    grid = np.arange(layout.labels.shape[0], dtype=np.float32)
    out = np.zeros(layout.labels.shape, np.float32)
    for slot in range(xyr.shape[1]):
        x, y, r = (xyr[:, slot, i][layout.labels] for i in range(3))
        d2 = ((grid[None] - x) ** 2 + (grid[:, None] - y) ** 2) / np.maximum(r, 1e-3) ** 2
        value = np.clip(1.6 - d2, 0, 1) if soft else np.exp(-d2)
        out = np.maximum(out, np.where(r > 0, value, 0))
    return out * (layout.labels > 0)


# ----------------------------------------------------------------------------- textures
def _streaks(z: np.ndarray, length: float, rng, bins: int = 6) -> np.ndarray:
    """Fibres, roughly 0..1: noise smeared along lines of ``length`` px, each pixel taking the
    line orientation nearest to its direction ``z`` (complex, unit; a soft pick among
    ``bins`` orientations)."""
    shape = z.shape
    if length >= 16:  # long fibres of big cells: drawn at half size (twice as wide), faster
        z, length = z[::2, ::2], length / 2
    noise = rng.standard_normal(z.shape, dtype=np.float32)
    z2 = z * z  # orientations are modulo pi
    half = int(length // 2) + 1
    grid = np.arange(-half, half + 1, dtype=np.float32)
    total, weight = np.zeros_like(noise), np.full_like(noise, 1e-6)
    for alpha in np.arange(bins) * np.pi / bins:
        u = grid[None] * np.cos(alpha) + grid[:, None] * np.sin(alpha)
        v = grid[:, None] * np.cos(alpha) - grid[None] * np.sin(alpha)
        kernel = np.exp(-(v**2) / 0.8) * (np.abs(u) <= length / 2)
        smeared = cv2.filter2D(noise, -1, (kernel / np.sqrt((kernel**2).sum())).astype(np.float32))
        pick = np.maximum(z2.real * np.cos(2 * alpha) + z2.imag * np.sin(2 * alpha), 0) ** 2
        pick = pick * pick * pick
        total += pick * smeared
        weight += pick
    fibres = np.clip(total / weight / 2.2, 0, 1)
    if fibres.shape != shape:
        fibres = cv2.resize(fibres, shape[::-1], interpolation=cv2.INTER_LINEAR)
    return fibres


def _radial_fibres(lay: Layout, rng) -> np.ndarray:
    """Microtubules, 0..1: slightly curving lines drawn out from each nucleus rim towards the
    cell's periphery (dense near the nucleus, sparse at the edge), kept to their own cell."""
    canvas = np.zeros(lay.labels.shape, np.uint8)  # each line drawn in its cell's id (<= 20)
    for cell in range(1, lay.count + 1):
        reach = float(lay.cell["a"][cell])
        count = max(8, int(2 * np.pi * reach / (4 * lay.unit)))
        z = np.exp(1j * rng.uniform(0, 2 * np.pi, (count, 1))).astype(np.complex64)
        start = rng.uniform(0.8, 1.1, (count, 1)) * _radius(lay.nuc, cell, z)
        bend = np.exp(1j * np.cumsum(rng.normal(0, 0.12, (count, 4)), axis=1))
        steps = z * bend * rng.uniform(0.15, 0.32, (count, 1)) * reach
        path = start * z + np.concatenate([np.zeros((count, 1)), np.cumsum(steps, axis=1)], 1)
        path += lay.nuc["x"][cell] + 1j * lay.nuc["y"][cell]
        points = np.round(np.stack([path.real, path.imag], -1) * 8).astype(np.int32)
        cv2.polylines(canvas, list(points[:, :, None]), False, cell, 1, cv2.LINE_8, 3)
    own = (canvas == lay.labels) & (lay.labels > 0)
    return np.clip(1.6 * _blur(own.astype(np.float32), 0.5 * lay.unit), 0, 1)


def _mesh(shape: tuple[int, int], unit: float, rng) -> np.ndarray:
    """Reticular network: thin bright lines along the zero crossings of band-pass noise."""
    return np.exp(-((_band(shape, 1.3 * unit, 3.0 * unit, rng) / 0.35) ** 2))


def _impulses(shape, flat_index: np.ndarray, sigma: float, rng) -> np.ndarray:
    """Gaussian dots of peak 0.4-1 at the flat pixel indices given."""
    canvas = np.zeros(shape[0] * shape[1], np.float32)
    np.add.at(canvas, flat_index, rng.uniform(0.4, 1.0, len(flat_index)).astype(np.float32))
    return np.clip(_blur(canvas.reshape(shape), sigma) * 2 * np.pi * sigma**2, 0, 1)


def _sample(mask: np.ndarray, per_px: float, rng) -> np.ndarray:
    """Random flat indices inside ``mask``, ``per_px`` of them per pixel on average."""
    pixels = np.flatnonzero(mask)
    return rng.choice(pixels, int(len(pixels) * per_px)) if len(pixels) else pixels


# ----------------------------------------------------------------------------- green patterns
@dataclass
class Stains:
    """The reference stains' textures, which the green patterns that copy them reuse."""

    fibres: np.ndarray  # red's radial lines
    mesh: np.ndarray  # yellow's network
    body: np.ndarray  # red's envelope: bright near the seed, dim at the outline
    er: np.ndarray  # yellow's envelope: bright around the nucleus


# Each pattern: (layout, stains, show = pixels of the cells showing the class, rng) -> a 0..1
# field over the whole image, masked to the showing cells afterwards.


def _nucleoplasm(lay, stains, show, rng):
    soft = _blur(lay.nucleus.astype(np.float32), 0.8 * lay.unit)
    texture = 0.8 + 0.2 * np.tanh(_noise(lay.labels.shape, 3 * lay.unit, rng))
    return soft * texture * (1 - 0.75 * lay.nucleoli)


def _nuclear_membrane(lay, stains, show, rng):
    return np.exp(-(((lay.rho - 0.94) * lay.rim / (1.1 * lay.unit)) ** 2)) * (lay.edge > lay.unit)


def _nucleoli(lay, stains, show, rng):
    return lay.nucleoli


def _fibrillar_center(lay, stains, show, rng):
    """2-5 tiny dots inside the nucleoli (fibrillar centres), over a faint nucleolus."""
    rows = lay.count + 1
    parent = lay.nucleolus_xyr[:, rng.integers(0, 4, 5)]  # 5 picks among each cell's 4 slots
    offset = rng.uniform(0, 0.55, (rows, 5)) * parent[..., 2]
    turn = np.exp(1j * rng.uniform(0, 2 * np.pi, (rows, 5)))
    radius = np.where(parent[..., 2] > 0, 1.1 * lay.unit, 0)
    radius[np.arange(5)[None] >= rng.integers(2, 6, (rows, 1))] = 0
    x, y = parent[..., 0] + offset * turn.real, parent[..., 1] + offset * turn.imag
    return _blobs(lay, np.stack([x, y, radius], -1)) * lay.nucleus + 0.15 * lay.nucleoli


def _speckles(lay, stains, show, rng):
    spots = np.clip((_band(lay.labels.shape, 1.2 * lay.unit, 4 * lay.unit, rng) - 0.5) / 0.9, 0, 1)
    return lay.nucleus * (0.12 + 0.88 * spots) * (1 - lay.nucleoli)


def _nuclear_bodies(lay, stains, show, rng):
    rows = lay.count + 1
    rho = rng.uniform(0, 0.75, (rows, 8))
    spots = _polar_spots(lay, rng.integers(2, 9, rows), 8, rho, 1.3 * lay.unit, rng)
    return _blobs(lay, spots) * lay.nucleus


def _reticulum(lay, stains, show, rng):
    return stains.er * (0.25 + 0.75 * stains.mesh) * (1 - 0.8 * lay.nucleus)


def _golgi(lay, stains, show, rng):
    """A compact, lumpy crescent hugging one side of the nucleus."""
    side = np.exp(-1j * lay.per_cell(rng.uniform(0, 2 * np.pi, lay.count)))
    facing = np.exp(-(1 - (lay.z * side).real) / 0.3)  # ~ exp(-(angle / 0.77)^2)
    size = lay.nuc["size"][lay.labels]
    band = np.exp(-(((lay.beyond_rim() - 0.3 * size) / (0.25 * size)) ** 2))
    lumps = np.clip(0.7 + 0.4 * _band(lay.labels.shape, 1.2 * lay.unit, 4 * lay.unit, rng), 0, 1)
    return np.clip(1.4 * facing * band, 0, 1) * lumps * (1 - lay.nucleus)


def _intermediate_filaments(lay, stains, show, rng):
    """Long wavy fibres wrapped around the nucleus (a perinuclear cage)."""
    wave = np.exp(0.5j * _noise(lay.labels.shape, 6 * lay.unit, rng))
    fibres = _streaks(lay.z * 1j * wave, 14 * lay.unit, rng)
    near = np.exp(-lay.beyond_rim() / (1.2 * lay.nuc["size"][lay.labels]))
    return fibres * (0.3 + 0.7 * near) * (1 - 0.6 * lay.nucleus)


def _actin(lay, stains, show, rng):
    """Straight stress fibres along the cell's long axis, and a cortical rim."""
    fibres = _streaks(np.conj(lay.cell["turn"])[lay.labels], 18 * lay.unit, rng)
    cortex = np.exp(-((lay.edge / (1.5 * lay.unit)) ** 2))
    return np.maximum(fibres * (1 - 0.7 * lay.nucleus), 0.7 * cortex)


def _microtubules(lay, stains, show, rng):
    """Red's own radial fibres, with a slowly varying gain."""
    gain = 0.8 + 0.2 * np.tanh(_noise(lay.labels.shape, 4 * lay.unit, rng))
    return stains.body * stains.fibres * gain


def _spindle(lay, stains, show, rng):
    """A bipolar lens of fibres across the nucleus, with bright poles."""
    axis = np.exp(1j * lay.per_cell(rng.uniform(0, np.pi, lay.count)))
    u = lay.dx * axis.real + lay.dy * axis.imag
    v = np.abs(lay.dy * axis.real - lay.dx * axis.imag)
    half = 1.2 * lay.nuc["size"][lay.labels]
    lens = np.clip((0.5 * half * (1 - (u / half) ** 2) - v) / lay.unit, 0, 1)
    poles = np.exp(-(((np.abs(u) - half) ** 2 + v**2) / (1.6 * lay.unit) ** 2))
    return np.maximum(lens * (0.4 + 0.6 * _streaks(axis, 10 * lay.unit, rng)), poles)


def _centrosome(lay, stains, show, rng):
    """One or two dots just off the nucleus."""
    rows = lay.count + 1
    z = np.exp(1j * (rng.uniform(0, 2 * np.pi, (rows, 1)) + np.array([[0.0, 0.25]])))
    spots = _polar_spots(lay, rng.integers(1, 3, rows), 2, 1.3, 1.4 * lay.unit, rng, z)
    return _blobs(lay, spots)


def _plasma_membrane(lay, stains, show, rng):
    return np.exp(-((lay.edge / (1.3 * lay.unit)) ** 2)) * (lay.labels > 0)


def _mitochondria(lay, stains, show, rng):
    """Short worm-like segments through the cytoplasm, denser near the nucleus."""
    near = lay.beyond_rim() < 1.5 * lay.nuc["size"][lay.labels]
    where = show & ~lay.nucleus & (near | (rng.random(show.shape) < 0.4))
    starts = _sample(where, 0.012 / lay.unit**2, rng)
    heading = rng.uniform(0, 2 * np.pi, (len(starts), 1))
    heading = heading + np.cumsum(rng.normal(0, 0.35, (len(starts), 5)), axis=1)
    walk = np.cumsum(1.6 * lay.unit * np.stack([np.cos(heading), np.sin(heading)], -1), axis=1)
    width = lay.labels.shape[1]
    origin = np.stack([starts % width, starts // width], -1)
    points = np.round((origin[:, None] + walk) * 8).astype(np.int32)  # 3 bits of sub-pixel
    canvas = np.zeros(lay.labels.shape, np.float32)
    thickness = max(1, round(lay.unit))
    cv2.polylines(canvas, list(points[:, :, None]), False, 1.0, thickness, cv2.LINE_AA, 3)
    return _blur(canvas, 0.5 * lay.unit) * (1 - lay.nucleus)


def _aggresome(lay, stains, show, rng):
    """One large round body beside the nucleus."""
    rows = lay.count + 1
    radius = rng.uniform(0.3, 0.42, (rows, 1)) * lay.nuc["size"][:, None]
    return _blobs(lay, _polar_spots(lay, 1, 1, 1.4, radius, rng), soft=True)


def _cytosol(lay, stains, show, rng):
    fill = 0.85 + 0.15 * np.tanh(_noise(lay.labels.shape, 5 * lay.unit, rng))
    return fill * (0.6 + 0.4 * np.clip(1 - lay.reach, 0, 1)) * (1 - lay.nucleus) * (lay.labels > 0)


def _vesicles(lay, stains, show, rng):
    spots = _sample(show & ~lay.nucleus, 0.03 / lay.unit**2, rng)
    return _impulses(lay.labels.shape, spots, 0.8 * lay.unit, rng)


Pattern = Callable[[Layout, Stains, np.ndarray, np.random.Generator], np.ndarray]
# fmt: off
PATTERNS: dict[str, Pattern] = {
    "Nucleoplasm": _nucleoplasm, "Nuclear membrane": _nuclear_membrane, "Nucleoli": _nucleoli,
    "Nucleoli fibrillar center": _fibrillar_center, "Nuclear speckles": _speckles,
    "Nuclear bodies": _nuclear_bodies, "Endoplasmic reticulum": _reticulum,
    "Golgi apparatus": _golgi, "Intermediate filaments": _intermediate_filaments,
    "Actin filaments": _actin, "Microtubules": _microtubules, "Mitotic spindle": _spindle,
    "Centrosome": _centrosome, "Plasma membrane": _plasma_membrane, "Mitochondria": _mitochondria,
    "Aggresome": _aggresome, "Cytosol": _cytosol,
    "Vesicles and punctate cytosolic patterns": _vesicles,
}
# fmt: on
"""Class name -> its green rendering (a misspelt name fails at import, below)."""
_PATTERN_OF = {HPA2021.class_names.index(name): draw for name, draw in PATTERNS.items()}


# ----------------------------------------------------------------------------- one image
def assign_classes(num_cells: int, rng) -> list[tuple[int, ...]]:
    """Each cell's classes (module doc): 1-3 image classes, each shown by 30-100 % of the
    cells; cells that show none are Negative."""
    shows = np.zeros((num_cells, HPA2021.num_classes), bool)
    if rng.random() >= NEGATIVE_IMAGE_FRACTION:
        count = rng.choice([1, 2, 3], p=[0.5, 0.33, 0.17])
        for klass in rng.choice(NEGATIVE, count, replace=False, p=CLASS_PROBABILITIES):
            share = 1.0 if rng.random() < 0.3 else rng.uniform(0.3, 1.0)
            chosen = rng.choice(num_cells, max(1, round(share * num_cells)), replace=False)
            shows[chosen, klass] = True
    shows[~shows.any(axis=1), NEGATIVE] = True
    return [tuple(np.flatnonzero(row).tolist()) for row in shows]


def _reference_stains(lay: Layout, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray, Stains]:
    """Blue, red and yellow signals (0..1), and the textures green may copy."""
    inside = lay.labels > 0
    # red and yellow dim where cells meet (as the thin cell edges do in HPA images): what lets a
    # watershed grown from the nuclei part touching cells
    junction = 1 - 0.75 * np.exp(-((lay.edge / (1.6 * lay.unit)) ** 2)) * inside
    junction *= 1 - 0.5 * lay.nucleus
    body = (0.35 + 0.65 * np.clip(1 - lay.reach, 0, 1) ** 0.6) * inside
    er = 0.3 + 0.7 * np.exp(-lay.beyond_rim() / (0.7 * lay.nuc["size"][lay.labels]))
    stains = Stains(
        fibres=_radial_fibres(lay, rng),
        mesh=_mesh(lay.labels.shape, lay.unit, rng),
        body=body,
        er=er * inside,
    )
    red = lay.per_cell(rng.uniform(0.6, 1.0, lay.count)) * body * (0.35 + 0.65 * stains.fibres)
    yellow = lay.per_cell(rng.uniform(0.6, 1.0, lay.count)) * stains.er * (0.3 + 0.7 * stains.mesh)
    chromatin = 0.85 + 0.15 * np.tanh(_noise(lay.labels.shape, 1.5 * lay.unit, rng))
    blue = _blur(lay.nucleus.astype(np.float32), 0.7 * lay.unit) * chromatin
    blue *= (1 - 0.45 * lay.nucleoli) * lay.per_cell(rng.uniform(0.55, 0.95, lay.count))
    return blue, red * junction, yellow * junction, stains


def _green(lay: Layout, stains: Stains, cell_classes, rng) -> np.ndarray:
    """Each class's pattern on the cells that show it, summed, times a per-cell brightness
    (0.5-1), over a faint background in every cell (all that a Negative cell has)."""
    shows = np.zeros((lay.count + 1, HPA2021.num_classes), bool)
    for cell, classes in enumerate(cell_classes, start=1):
        shows[cell, list(classes)] = True
    green = np.zeros(lay.labels.shape, np.float32)
    for klass, draw in _PATTERN_OF.items():
        if shows[:, klass].any():
            show = shows[:, klass][lay.labels]
            green += show * rng.uniform(0.8, 1.0) * draw(lay, stains, show, rng)
    brightness = lay.per_cell(rng.uniform(0.5, 1.0, lay.count))
    return np.clip(green, 0, 1) * brightness + 0.04 * (lay.labels > 0)


def _photograph(signal: np.ndarray, unit: float, rng) -> np.ndarray:
    """Optics blur, exposure, shot noise (Gaussian approximation), read noise and a dark
    offset, then 8 bits."""
    optics = np.clip(_blur(signal.astype(np.float32), 0.6 * unit), 0, 1) * rng.uniform(0.8, 1.0)
    spread = np.sqrt(optics / 400 + 0.006**2)
    image = optics + 0.012 + spread * rng.standard_normal(signal.shape, dtype=np.float32)
    return np.clip(np.round(image * 255), 0, 255).astype(np.uint8)


def render_image(size: int, rng: np.random.Generator):
    """(uint8 (4, S, S) RGBY channels, uint16 cell labels, each cell's classes)."""
    layout = build_layout(size, rng)
    while layout.count == 0:  # never seen in practice; kept for safety
        layout = build_layout(size, rng)
    cell_classes = assign_classes(layout.count, rng)
    blue, red, yellow, stains = _reference_stains(layout, rng)
    green = _green(layout, stains, cell_classes, rng)
    signals = {"red": red, "green": green, "blue": blue, "yellow": yellow}
    channels = np.stack([_photograph(signals[color], layout.unit, rng) for color in CHANNELS])
    return channels, layout.labels.astype(np.uint16), cell_classes


# ----------------------------------------------------------------------------- the set on disk
def _label_text(classes: Sequence[int]) -> str:
    return HPA2021.separator.join(str(c) for c in sorted(set(classes)))


def _imwrite(path: Path, image: np.ndarray, params: list[int]) -> None:
    if not cv2.imwrite(str(path), image, params):
        raise OSError(f"could not write {path}")


def _write_csv(path: Path, header: Sequence[str], rows) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _write_split(work: Path, split: str, count: int, manifest: dict) -> list[tuple]:
    """Write ``count`` images; returns (id, size, label, cell labels) per image."""
    (work / split).mkdir()
    written = []
    for index in range(count):
        rng = np.random.default_rng(
            np.random.SeedSequence([manifest["seed"], SPLITS[split], index])
        )
        image_id = str(uuid.UUID(bytes=rng.bytes(16)))
        size = int(rng.choice(manifest["sizes"]))
        channels, labels, cell_classes = render_image(size, rng)
        for color, plane in zip(CHANNELS, channels, strict=True):
            _imwrite(work / split / f"{image_id}_{color}.png", plane, _PNG)
        _imwrite(work / "cell_truth" / f"{image_id}_cells.png", labels, _MASK_PNG)
        union = {c for classes in cell_classes for c in classes}
        written.append((image_id, size, _label_text(union), [_label_text(c) for c in cell_classes]))
    return written


def _manifest(num_train: int, num_test: int, sizes: Sequence[int], seed: int) -> dict:
    for name, value, least in (
        ("num_train", num_train, 1),
        ("num_test", num_test, 0),
        ("seed", seed, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    sizes = [int(s) for s in sizes]
    if not sizes or min(sizes) < MIN_SIZE:
        raise ValueError(f"sizes must be a non-empty list of sides >= {MIN_SIZE}, got {sizes}")
    return {
        "generator": "benchmarks.alt_cells",
        "format_version": FORMAT_VERSION,
        "num_train": int(num_train),
        "num_test": int(num_test),
        "sizes": sizes,
        "seed": int(seed),
    }


def _read_manifest(root: Path) -> dict | None:
    try:
        manifest = json.loads((root / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _is_complete(root: Path, manifest: dict) -> bool:
    """The manifest matches and every image and mask the csvs list is there."""
    if _read_manifest(root) != manifest or not (root / "cell_truth" / "cells.csv").is_file():
        return False
    tables = {"train": root / "train.csv"}
    if manifest["num_test"]:
        tables["test"] = root / "sample_submission.csv"
    for split, table in tables.items():
        try:
            with table.open(newline="") as handle:
                ids = [row[HPA2021.id_column] for row in csv.DictReader(handle)]
        except (OSError, KeyError):
            return False
        files = [root / split / f"{i}_{c}.png" for i in ids for c in CHANNELS]
        files += [root / "cell_truth" / f"{i}_cells.png" for i in ids]
        if len(ids) != manifest[f"num_{split}"] or not all(f.is_file() for f in files):
            return False
    return True


def _generate(root: Path, manifest: dict) -> None:
    """Write the set into a sibling temp folder, then move it into place as a whole."""
    work = root.with_name(f"{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    try:
        (work / "cell_truth").mkdir(parents=True)
        train = _write_split(work, "train", manifest["num_train"], manifest)
        test = (
            _write_split(work, "test", manifest["num_test"], manifest)
            if manifest["num_test"]
            else []
        )
        rows = [(image_id, label) for image_id, _, label, _ in train]
        _write_csv(work / "train.csv", (HPA2021.id_column, HPA2021.column), rows)
        if test:
            _write_csv(
                work / "sample_submission.csv",
                (HPA2021.id_column, "ImageWidth", "ImageHeight", "PredictionString"),
                [(i, s, s, "") for i, s, _, _ in test],
            )
        _write_csv(
            work / "cell_truth" / "cells.csv",
            (HPA2021.id_column, "cell_id", HPA2021.column),
            [(i, k, c) for i, _, _, cells in train + test for k, c in enumerate(cells, 1)],
        )
        (work / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
        move_folder_into_place(work, root, lambda: _is_complete(root, manifest))
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def ensure_alt_cell_set(
    root: str | Path,
    *,
    num_train: int,
    num_test: int = 0,
    sizes: Sequence[int] = DEFAULT_SIZES,
    seed: int = 0,
) -> Path:
    """``root`` (absolute) holding this generator's set with these settings: reused when it is
    there and complete, else written. Raises HPAInputError when ``root`` holds a set with other
    settings or anything else that is not empty (nothing is overwritten)."""
    manifest = _manifest(num_train, num_test, sizes, seed)
    root = Path(os.path.abspath(root))
    existing = _read_manifest(root)
    if existing is not None and existing != manifest:
        raise HPAInputError(
            f"{root} holds an alternative cell set with other settings ({existing}), not "
            f"{manifest}; choose another root or delete it"
        )
    if existing is not None and _is_complete(root, manifest):
        log.info("using the existing alternative cell set in %s", root)
        return root
    if existing is None and (root.is_file() or (root.is_dir() and any(root.iterdir()))):
        raise HPAInputError(
            f"{root} exists and is not an alternative cell set; refusing to overwrite it"
        )
    log.info("writing %d + %d alternative cell images into %s", num_train, num_test, root)
    _generate(root, manifest)
    return root


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--num-train", type=int, default=600)
    parser.add_argument("--num-test", type=int, default=0)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = ensure_alt_cell_set(
        args.root,
        num_train=args.num_train,
        num_test=args.num_test,
        sizes=args.sizes,
        seed=args.seed,
    )
    print(root)


if __name__ == "__main__":
    main()
