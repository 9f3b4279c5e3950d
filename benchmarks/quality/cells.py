"""One image's cells: placement, star-shaped outlines, off-centre nuclei, and the per-pixel fields
(owner cell, compartments, distances) that the stains and the green patterns are drawn from.

Lengths are given in pixels of a 256 px image and scale with ``Scene.unit``. Cells are placed
uniformly (not as a colony) and may overlap a little: a later cell covers an earlier one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

_HARMONICS = (2, 3, 5)  # outline r(angle) = R (1 + sum_k a_k cos(k (angle - phase_k)))


@dataclass(frozen=True)
class Outline:
    x: float
    y: float
    radius: float
    amplitudes: tuple[float, ...]
    phases: tuple[float, ...]

    def edge_radius(self, angle: np.ndarray | float) -> np.ndarray | float:
        edge = 1.0
        for k, amplitude, phase in zip(_HARMONICS, self.amplitudes, self.phases, strict=True):
            edge = edge + amplitude * np.cos(k * (angle - phase))
        return self.radius * edge

    def normalised_radius(self, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
        """Distance from the centre over the outline's radius in that direction (< 1 inside)."""
        dx, dy = xx - self.x, yy - self.y
        return np.hypot(dx, dy) / self.edge_radius(np.arctan2(dy, dx))

    def point(self, angle: float, fraction: float = 1.0, beyond: float = 0.0) -> np.ndarray:
        """The (x, y) point at ``fraction`` of the way from the centre to the outline in direction
        ``angle``, moved ``beyond`` px further out."""
        reach = fraction * self.edge_radius(angle) + beyond
        return np.array([self.x + reach * math.cos(angle), self.y + reach * math.sin(angle)])

    def window(self, size: int) -> tuple[slice, slice]:
        """Rows and columns of a ``size`` px image that hold the whole outline."""
        reach = self.radius * (1 + sum(self.amplitudes)) + 1

        def span(centre: float) -> slice:
            return slice(max(int(centre - reach), 0), min(int(centre + reach) + 1, size))

        return span(self.y), span(self.x)


def _outline(rng: np.random.Generator, x: float, y: float, radius: float, irregularity: float):
    amplitudes = tuple(irregularity * rng.uniform(0, high) for high in (0.28, 0.1, 0.05))
    return Outline(x, y, radius, amplitudes, tuple(rng.uniform(0, 2 * math.pi, 3)))


def smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian noise blurred with ``sigma`` pixels."""
    field = cv2.GaussianBlur(rng.standard_normal((size, size)).astype(np.float32), (0, 0), sigma)
    return (field - field.mean()) / max(float(field.std()), 1e-6)


class Scene:
    """Cells of one ``size`` px image drawn with ``rng``; see the module docstring."""

    def __init__(self, size: int, rng: np.random.Generator) -> None:
        self.size, self.rng, self.unit = size, rng, size / 256
        self.cells, self.nuclei = self._place_cells()
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
        self.owner = np.full((size, size), -1, dtype=np.int32)
        self.rho = np.zeros((size, size), dtype=np.float32)  # normalised radius in the owner
        self.nucleus = np.zeros((size, size), dtype=bool)
        for index, (cell, nucleus) in enumerate(zip(self.cells, self.nuclei, strict=True)):
            window = cell.window(size)
            rho = cell.normalised_radius(xx[window], yy[window])
            inside = rho < 1
            self.owner[window][inside], self.rho[window][inside] = index, rho[inside]
            in_nucleus = nucleus.normalised_radius(xx[window][inside], yy[window][inside]) < 1
            self.nucleus[window][inside] = in_nucleus
        self.in_cell = self.owner >= 0
        self.cytoplasm = self.in_cell & ~self.nucleus
        self.edge_distance = np.zeros((size, size), dtype=np.float32)
        for index in range(len(self.cells)):
            own = self.owner == index
            distance = cv2.distanceTransform(own.astype(np.uint8), cv2.DIST_L2, 3)
            self.edge_distance[own] = distance[own]
        outside = cv2.distanceTransform((~self.nucleus).astype(np.uint8), cv2.DIST_L2, 3)
        inside = cv2.distanceTransform(self.nucleus.astype(np.uint8), cv2.DIST_L2, 3)
        self.nucleus_distance = outside - inside  # signed: negative inside a nucleus
        self.junction = self._junctions()
        self.nucleoli = [  # 1-4 per nucleus, well inside it
            np.array([n.point(a, 0.6 * math.sqrt(rng.random())) for a in rng.uniform(0, 7, k)])
            for n, k in zip(self.nuclei, rng.integers(1, 5, len(self.nuclei)), strict=True)
        ]
        self.reticulum = np.exp(-((smooth_noise(rng, size, 2.5 * self.unit) / 0.3) ** 2))

    def _place_cells(self) -> tuple[list[Outline], list[Outline]]:
        rng, size = self.rng, self.size
        wanted = int(rng.integers(5, 15))
        typical = size * math.sqrt(0.5 / (math.pi * wanted))
        cells: list[Outline] = []
        for _ in range(60 * wanted):
            if len(cells) == wanted:
                break
            x, y = rng.uniform(0.03 * size, 0.97 * size, 2)
            radius = typical * rng.uniform(0.8, 1.2)
            if all(math.hypot(x - c.x, y - c.y) >= 0.8 * (radius + c.radius) for c in cells):
                cells.append(_outline(rng, x, y, radius, irregularity=1.0))
        nuclei = []
        for cell in cells:
            offset, direction = cell.radius * rng.uniform(0, 0.25), rng.uniform(0, 2 * math.pi)
            x = cell.x + offset * math.cos(direction)
            y = cell.y + offset * math.sin(direction)
            nuclei.append(_outline(rng, x, y, cell.radius * rng.uniform(0.3, 0.45), 0.5))
        return cells, nuclei

    def _junctions(self) -> np.ndarray:
        """Pixels of a cell that touch a pixel of another cell."""
        padded = np.pad(self.owner, 1, constant_values=-1)
        centre = padded[1:-1, 1:-1]
        junction = np.zeros_like(self.in_cell)
        for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
            neighbour = padded[dy : dy + self.size, dx : dx + self.size]
            junction |= (neighbour >= 0) & (neighbour != centre) & (centre >= 0)
        return junction

    def points(self, weight: np.ndarray, count: int) -> np.ndarray:
        """``count`` (x, y) points drawn from pixels with probability proportional to ``weight``."""
        flat = weight.ravel().astype(np.float64)
        if count <= 0 or flat.sum() <= 0:
            return np.zeros((0, 2))
        pixels = self.rng.choice(flat.size, size=int(count), p=flat / flat.sum())
        jitter = self.rng.uniform(0, 1, (len(pixels), 2))
        return np.stack([pixels % self.size, pixels // self.size], axis=1) + jitter

    def per_cell(self, values: np.ndarray) -> np.ndarray:
        """A field holding ``values[i]`` on the pixels of cell i and 0 outside cells."""
        return np.append(np.asarray(values, dtype=np.float32), 0.0)[self.owner]

    def some_cells(self) -> np.ndarray:
        """A mask of the cells showing a pattern: each with one probability in 0.6..1, >= 1."""
        chosen = self.rng.random(len(self.cells)) < self.rng.uniform(0.6, 1.0)
        chosen[self.rng.integers(len(self.cells))] = True
        return chosen
