"""Green patterns drawn as structures (lines, spokes, clusters) in the cells of a Scene, each a
function (scene, cells) -> field of about 0..1, ``cells`` masking the cells that show it."""

from __future__ import annotations

import math

import numpy as np

from benchmarks.quality.cells import Scene
from benchmarks.quality.drawing import dots, rings, segment, strokes, wander


def where(s: Scene, cells: np.ndarray, compartment: np.ndarray) -> np.ndarray:
    """``compartment`` (a mask) restricted to the chosen ``cells``, as 0./1. floats."""
    return (compartment & (s.per_cell(cells) > 0)).astype(np.float32)


def count(s: Scene, cells: np.ndarray, low: int, high: int) -> int:
    """A total of ``low``..``high`` items per chosen cell."""
    return int(s.rng.integers(low, high + 1, int(cells.sum())).sum())


def beside_nucleus(s: Scene, cells: np.ndarray, distance: float, pair: float | None = None):
    """A point ``distance`` px outside the nucleus of each chosen cell, on a random side; with
    ``pair``, two points that far apart instead."""
    points = []
    for index in np.flatnonzero(cells):
        angle = s.rng.uniform(0, 2 * math.pi)
        centre = s.nuclei[index].point(angle, beyond=distance * s.unit)
        if pair is None:
            points.append(centre)
            continue
        across = 0.5 * pair * s.unit * np.array([-math.sin(angle), math.cos(angle)])
        points.extend([centre - across, centre + across])
    return np.array(points).reshape(-1, 2)


def clusters(s: Scene, centres: np.ndarray, per_cluster: int, spread: float, sigma: float):
    """``per_cluster`` dots scattered ``spread`` px around each centre."""
    points = np.repeat(centres, per_cluster, axis=0)
    points = points + s.rng.normal(0, spread * s.unit, points.shape)
    return dots(s.size, points, sigma * s.unit, 1 - 0.4 * s.rng.random(len(points)))


def filaments(s: Scene, cells, per_cell, steps: int, turn: float, width: float = 1.0):
    """Random walks of ``steps`` 3 px steps starting in the cytoplasm."""
    starts = s.points(where(s, cells, s.cytoplasm), count(s, cells, *per_cell))
    lines = [wander(s.rng, start, steps, 3 * s.unit, turn) for start in starts]
    return where(s, cells, s.in_cell) * strokes(s.size, lines, width * s.unit, 0.6 * s.unit)


def actin(s: Scene, cells: np.ndarray) -> np.ndarray:
    """Parallel stress fibres along each cell's long axis."""
    lines = []
    for index in np.flatnonzero(cells):
        cell = s.cells[index]
        axis = cell.phases[0] + s.rng.normal(0, 0.1)  # the elongation of the outline
        normal = np.array([-math.sin(axis), math.cos(axis)])
        for shift in s.rng.uniform(-0.7, 0.7, s.rng.integers(5, 11)) * cell.radius:
            lines.append(
                segment(*(np.array([cell.x, cell.y]) + shift * normal), axis, 2.4 * cell.radius)
            )
    return where(s, cells, s.in_cell) * strokes(s.size, lines, s.unit, 0.5 * s.unit)


def radial(s: Scene, cells, per_cell, inner: float, outer: float, dash=None, width=1.0):
    """Spokes from ``inner`` to ``outer`` of the way to each chosen cell's outline; with
    ``dash``, only a dash of that length in px midway."""
    lines = []
    for index in np.flatnonzero(cells):
        cell = s.cells[index]
        for angle in s.rng.uniform(0, 2 * math.pi, s.rng.integers(per_cell[0], per_cell[1] + 1)):
            start, end = cell.point(angle, inner), cell.point(angle, outer)
            if dash is None:
                lines.append(np.array([start, end]))
            else:
                lines.append(segment(*(start + end) / 2, angle, dash * s.unit))
    return where(s, cells, s.in_cell) * strokes(s.size, lines, width * s.unit, 0.6 * s.unit)


def cytokinetic_bridge(s: Scene, cells: np.ndarray) -> np.ndarray:
    """A bar with a bright midbody between the two closest cells of the image."""
    centres = np.array([[cell.x, cell.y] for cell in s.cells])
    if len(centres) < 2:  # a lone cell: a bridge to a point outside it
        outside = s.cells[0].point(s.rng.uniform(0, 2 * math.pi), beyond=20 * s.unit)
        centres = np.concatenate([centres, outside[None]])
    distance = np.linalg.norm(centres[:, None] - centres[None], axis=2) + 1e9 * np.eye(len(centres))
    first, second = np.unravel_index(np.argmin(distance), distance.shape)
    a, b = centres[first], centres[second]
    bar = strokes(s.size, [np.array([a + 0.3 * (b - a), a + 0.7 * (b - a)])], 2 * s.unit, s.unit)
    return bar + dots(s.size, ((a + b) / 2)[None], 2.2 * s.unit)


def mitotic_spindle(s: Scene, cells: np.ndarray) -> np.ndarray:
    """In one cell, bowed fibres between two poles across its nucleus."""
    nucleus = s.nuclei[int(np.flatnonzero(cells)[0])]
    axis = s.rng.uniform(0, math.pi)
    poles = np.array([nucleus.point(axis + turn, 0.8) for turn in (0, math.pi)])
    normal = np.array([-math.sin(axis), math.cos(axis)])
    bows = np.linspace(-0.5, 0.5, 9) * nucleus.radius
    lines = [np.array([poles[0], poles.mean(axis=0) + bow * normal, poles[1]]) for bow in bows]
    return strokes(s.size, lines, s.unit, 0.6 * s.unit) + dots(s.size, poles, 2 * s.unit)


def rods_and_rings(s: Scene, cells: np.ndarray) -> np.ndarray:
    centres = s.points(where(s, cells, s.cytoplasm), count(s, cells, 1, 3))
    is_rod = s.rng.random(len(centres)) < 0.5
    rods = [segment(x, y, s.rng.uniform(0, math.pi), 8 * s.unit) for x, y in centres[is_rod]]
    radii = np.full(int((~is_rod).sum()), 3 * s.unit)
    soft = 0.5 * s.unit
    return strokes(s.size, rods, 1.5 * s.unit, soft) + rings(s.size, centres[~is_rod], radii, soft)
