"""Synthetic RGBY cell images with known cells, for the segmentation tests and benchmark.

A field of view is drawn in resolution-free coordinates (the unit square), so the same seed gives
the same cells at any pixel size. Cells sit on a jittered grid with some gaps; each cell is an
ellipse, and where two ellipses overlap the pixel belongs to the cell it is relatively closer to
(a multiplicatively weighted Voronoi split), which is where the cytoplasm signal of both cells is
lowest, as between touching cells in HPA images. Each cell holds an elliptic nucleus; one pair of
daughter cells has touching nuclei, and one cell sits on the left border with its nucleus cut.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GRID = 4
"""Cells per row and column of the jittered grid (before gaps and the daughter pair)."""


@dataclass(frozen=True)
class SyntheticCell:
    """One cell in unit coordinates: centre, cell radii, nucleus radii, orientation (radians)."""

    y: float
    x: float
    radii: tuple[float, float]
    nucleus_radii: tuple[float, float]
    angle: float
    brightness: float
    """Stain intensity of the cell (its cytoplasm and nucleus), 0.55..1."""


def synthetic_cells(seed: int = 0) -> list[SyntheticCell]:
    """The cells of field ``seed``: a 4 x 4 jittered grid less 3 gaps, a border cell whose nucleus
    the left edge cuts, and a pair of daughter cells with touching nuclei."""
    rng = np.random.default_rng(seed)
    spacing = 1.0 / GRID
    slots = [(row, col) for row in range(GRID) for col in range(GRID)]
    gaps = {tuple(slot) for slot in rng.permutation(slots)[:3].tolist()}
    cells = []
    for row, col in slots:
        if (row, col) in gaps:
            continue
        y = (row + 0.5) * spacing + rng.uniform(-0.03, 0.03)
        x = (col + 0.5) * spacing + rng.uniform(-0.03, 0.03)
        if col == 0 and row == 1:
            x = 0.02  # on the border: half of the nucleus lies outside the image
        cells.append(_random_cell(rng, y, x, scale=1.0))
    # the daughter pair replaces the last cell: two small cells whose nuclei touch
    last = cells.pop()
    for offset in (-0.036, 0.036):
        cells.append(_random_cell(rng, last.y, last.x + offset, scale=0.75, round_nucleus=True))
    return cells


def _random_cell(
    rng: np.random.Generator, y: float, x: float, scale: float, round_nucleus: bool = False
) -> SyntheticCell:
    radii = (rng.uniform(0.12, 0.15) * scale, rng.uniform(0.13, 0.16) * scale)
    nucleus = rng.uniform(0.038, 0.048)
    squash = 1.0 if round_nucleus else rng.uniform(0.8, 1.0)
    angle, brightness = rng.uniform(0, np.pi), rng.uniform(0.55, 1.0)
    return SyntheticCell(y, x, radii, (nucleus, nucleus * squash), angle, brightness)


def draw_cells(side: int, seed: int = 0, noise: float = 0.03) -> tuple[np.ndarray, np.ndarray]:
    """(image, truth) of field ``seed`` at ``side`` x ``side`` px.

    image: uint8 (4, side, side) RGBY; red and yellow carry the cytoplasm (brightest at the
    nucleus, fading to the cell edge), blue the nuclei, green a dim protein signal. truth: int32
    (side, side) cell labels 1..K, 0 background (as the segmenters return).
    """
    cells = synthetic_cells(seed)
    centres = (np.arange(side, dtype=np.float32) + 0.5) / side
    ys, xs = np.meshgrid(centres, centres, indexing="ij")
    nearest = np.full((side, side), np.inf, np.float32)  # min over cells of the ellipse distance
    owner = np.zeros((side, side), np.int32)
    in_nucleus = np.zeros((side, side), np.float32)
    brightness = np.zeros((side, side), np.float32)
    for label, cell in enumerate(cells, start=1):
        distance = _ellipse_distance(ys, xs, cell, cell.radii)
        closer = distance < nearest
        nearest[closer] = distance[closer]
        owner[closer] = label
    truth = np.where(nearest <= 1.0, owner, 0).astype(np.int32)
    for label, cell in enumerate(cells, start=1):
        nucleus = _ellipse_distance(ys, xs, cell, cell.nucleus_radii)
        in_nucleus = np.where((truth == label) & (nucleus <= 1.0), 1.0, in_nucleus)
        brightness[truth == label] = cell.brightness

    rng = np.random.default_rng(seed + 1)
    inside = truth > 0
    cytoplasm = np.where(inside, 1.0 - 0.6 * np.minimum(nearest, 1.0) ** 2, 0.0) * brightness
    red = 0.75 * cytoplasm * (0.85 + 0.15 * np.cos(40 * xs) * np.cos(33 * ys))
    yellow = 0.6 * cytoplasm * (0.85 + 0.15 * np.sin(27 * xs + 31 * ys))
    blue = 0.85 * in_nucleus * brightness * (0.9 + 0.1 * np.cos(90 * xs) * np.sin(70 * ys))
    green = 0.3 * cytoplasm * (0.5 + 0.5 * np.sin(50 * ys))
    planes = np.stack([red, green, blue, yellow]) + 0.03
    planes = planes + rng.normal(0.0, noise, planes.shape)
    image = np.clip(np.rint(planes * 255), 0, 255).astype(np.uint8)
    return image, truth


def _ellipse_distance(
    ys: np.ndarray, xs: np.ndarray, cell: SyntheticCell, radii: tuple[float, float]
) -> np.ndarray:
    """The normalised distance to ``cell``'s centre: 1 on the ellipse of ``radii``."""
    cos, sin = np.cos(cell.angle), np.sin(cell.angle)
    dy, dx = ys - cell.y, xs - cell.x
    along = (dx * cos + dy * sin) / radii[1]
    across = (-dx * sin + dy * cos) / radii[0]
    return np.sqrt(along**2 + across**2).astype(np.float32)
