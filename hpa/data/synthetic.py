"""Procedural HPA-like images written in the Kaggle layout, read back like real data.

Each image is a small colony of cells: nuclei in blue, radial microtubules in red, a reticular
endoplasmic reticulum in yellow, and in green the sum of the localisation motifs of its labels
(one motif per class, see ``_MOTIFS``). Labels are multilabel with the class frequencies and the
labels-per-image distribution of the real Kaggle train.csv.

Layout written under ROOT (the same as Kaggle's, plus two files)::

    ROOT/train.csv                          Id,Target
    ROOT/train/{Id}_{red,green,blue,yellow}.png
    ROOT/test/{Id}_{color}.png              only when num_test > 0
    ROOT/sample_submission.csv              Id,Predicted (all 0, as on Kaggle)
    ROOT/test_labels.csv                    Id,Target: the hidden truth of the test images
    ROOT/synthetic.json                     generation parameters; its presence marks ROOT done

A set is generated into a sibling temporary directory and renamed to ROOT only when complete,
so an interrupted generation never passes for a finished one.

Every image is drawn from its own generator seeded by (seed, split, index): the same parameters
give byte-identical files on the same platform, whatever the order of generation.

Command line: ``python -m hpa.data.synthetic ROOT --n N --size S --seed K [--n-test M]``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from hpa.errors import HPAInputError
from hpa.labels import (
    CHANNELS,
    KAGGLE_CLASS_COUNTS,
    KAGGLE_LABELS_PER_IMAGE,
    NUM_CLASSES,
    NUM_KAGGLE_TRAIN_IMAGES,
    format_target,
)

logger = logging.getLogger(__name__)

MANIFEST_NAME = "synthetic.json"
FORMAT_VERSION = 1
MIN_IMAGE_SIZE = 32
REFERENCE_SIZE = 256
"""Motif sizes below are given in pixels of a REFERENCE_SIZE image and scale with the size."""

_TRAIN_SPLIT, _TEST_SPLIT = 0, 1
# Noisy images barely compress: Huffman-only coding is both the fastest and the smallest.
_PNG_PARAMS = [
    cv2.IMWRITE_PNG_COMPRESSION,
    1,
    cv2.IMWRITE_PNG_STRATEGY,
    cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY,
]


# --------------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------------
# Conditional Poisson sampling: the number k of labels of an image follows the real
# labels-per-image distribution; given k, a set S of k distinct classes is drawn with
# P(S) proportional to the product of the class weights in S. Inclusion probabilities have a
# closed form (elementary symmetric polynomials), so the weights can be calibrated exactly for
# the marginal class frequencies to equal the real ones.


def _real_class_frequencies() -> np.ndarray:
    """Fraction of the real Kaggle train images that carry each class (28 floats)."""
    return np.asarray(KAGGLE_CLASS_COUNTS, dtype=np.float64) / NUM_KAGGLE_TRAIN_IMAGES


def _labels_per_image_distribution() -> tuple[np.ndarray, np.ndarray]:
    sizes = np.array(sorted(KAGGLE_LABELS_PER_IMAGE), dtype=np.int64)
    counts = np.array([KAGGLE_LABELS_PER_IMAGE[k] for k in sizes], dtype=np.float64)
    return sizes, counts / counts.sum()


def _inclusion_probabilities(weights: np.ndarray, max_size: int) -> np.ndarray:
    """P(class i is drawn | k classes are drawn), shape (max_size + 1, num_classes)."""
    num_classes = len(weights)
    symmetric = np.zeros(max_size + 1)  # e_r(all weights)
    symmetric[0] = 1.0
    symmetric_without = np.zeros((num_classes, max_size + 1))  # e_r(all weights but w_i)
    symmetric_without[:, 0] = 1.0
    for j, weight in enumerate(weights):
        symmetric[1:] = symmetric[1:] + weight * symmetric[:-1]
        others = np.where(np.arange(num_classes) == j, 0.0, weight)[:, None]
        symmetric_without[:, 1:] = symmetric_without[:, 1:] + others * symmetric_without[:, :-1]
    probabilities = np.zeros((max_size + 1, num_classes))
    for size in range(1, max_size + 1):
        probabilities[size] = weights * symmetric_without[:, size - 1] / symmetric[size]
    return probabilities


def _expected_class_frequencies(weights: np.ndarray) -> np.ndarray:
    """Marginal frequency of each class under sample_labels with these class weights."""
    sizes, size_probabilities = _labels_per_image_distribution()
    inclusion = _inclusion_probabilities(weights, int(sizes.max()))
    return size_probabilities @ inclusion[sizes]


@lru_cache(maxsize=1)
def _class_weights() -> np.ndarray:
    """Class weights whose expected marginal frequencies equal the real ones (fixed point)."""
    target = _real_class_frequencies()
    weights = target / target.sum()
    for _ in range(1000):
        expected = _expected_class_frequencies(weights)
        if np.max(np.abs(expected / target - 1.0)) < 1e-10:
            break
        weights = weights * (target / expected)
        weights /= weights.sum()  # the sampling law does not depend on the scale
    weights.setflags(write=False)
    return weights


@lru_cache(maxsize=1)
def _take_probabilities() -> np.ndarray:
    """table[j, r]: probability to take class j when r classes remain to draw from j..27."""
    weights = _class_weights()
    max_size = max(KAGGLE_LABELS_PER_IMAGE)
    # suffix[j, r] = e_r(weights[j:]); table[j, r] = w_j * e_{r-1}(weights[j+1:]) / suffix[j, r]
    suffix = np.zeros((NUM_CLASSES + 1, max_size + 1))
    suffix[NUM_CLASSES, 0] = 1.0
    for j in range(NUM_CLASSES - 1, -1, -1):
        suffix[j] = suffix[j + 1]
        suffix[j, 1:] += weights[j] * suffix[j + 1, :-1]
    table = np.zeros((NUM_CLASSES, max_size + 1))
    for j in range(NUM_CLASSES):
        # suffix[j, r] is 0 when fewer than r classes remain: such states never occur.
        possible = suffix[j, 1:] > 0
        table[j, 1:][possible] = weights[j] * suffix[j + 1, :-1][possible] / suffix[j, 1:][possible]
    table.setflags(write=False)
    return table


def sample_labels(num_images: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``num_images`` label rows: an N x 28 uint8 multi-hot matrix with real marginals."""
    sizes, size_probabilities = _labels_per_image_distribution()
    table = _take_probabilities()
    remaining = rng.choice(sizes, size=num_images, p=size_probabilities)
    uniforms = rng.random((NUM_CLASSES, num_images))
    labels = np.zeros((num_images, NUM_CLASSES), dtype=np.uint8)
    for class_id in range(NUM_CLASSES):
        taken = uniforms[class_id] < table[class_id, remaining]
        labels[:, class_id] = taken
        remaining = remaining - taken
    return labels


# --------------------------------------------------------------------------------------------
# Image helpers
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    ys.setflags(write=False)
    xs.setflags(write=False)
    return ys, xs


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, sigmaY=sigma)


@lru_cache(maxsize=64)
def _spot_peak_gain(sigma: float) -> float:
    """Factor that brings the peak of a blurred unit impulse back to 1."""
    kernel = cv2.getGaussianKernel(2 * math.ceil(4 * sigma) + 1, sigma, cv2.CV_64F)
    return float(1.0 / kernel.max() ** 2)


def _white_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Zero-mean, unit-variance uniform noise: 4x faster to draw than normal noise, and
    Gaussian anyway once blurred."""
    uniform = rng.random(shape, dtype=np.float32)
    return (uniform - np.float32(0.5)) * np.float32(math.sqrt(12.0))


@lru_cache(maxsize=64)
def _blurred_noise_gain(sigma: float) -> float:
    """Factor that brings unit white noise back to std 1 after a Gaussian blur."""
    kernel = cv2.getGaussianKernel(2 * math.ceil(4 * sigma) + 1, sigma, cv2.CV_64F)
    return float(1.0 / np.sum(kernel**2))  # 2-D kernel = outer(k, k): std = sum(k^2)


def _soft_inside(distance: np.ndarray, edge_width: float) -> np.ndarray:
    """1 well inside (distance < 0), 0 outside, a linear ramp of ``edge_width`` px between."""
    return np.clip(0.5 - distance / edge_width, 0.0, 1.0)


def _ridges(phase: np.ndarray, power: int) -> np.ndarray:
    """Thin bright lines where ``phase`` is a multiple of 2 pi: ((1 + cos) / 2) ** power."""
    result = 0.5 + 0.5 * np.cos(phase)
    base = result
    for _ in range(power - 1):
        result = result * base
    return result


def _ellipse_radius(
    direction: np.ndarray, semi_major: np.ndarray, semi_minor: np.ndarray, orientation: np.ndarray
) -> np.ndarray:
    """Distance from an ellipse's centre to its edge along ``direction`` (radians)."""
    relative = direction - orientation
    return 1.0 / np.sqrt(
        (np.cos(relative) / semi_major) ** 2 + (np.sin(relative) / semi_minor) ** 2
    )


_DRAW_SHIFT = 4
"""OpenCV drawing calls get fixed-point coordinates with this many fractional bits."""


def _fixed_point(value: np.ndarray | float) -> np.ndarray:
    """Pixel coordinates (or lengths) in OpenCV's fixed point for ``shift=_DRAW_SHIFT``."""
    return np.rint(np.asarray(value) * (1 << _DRAW_SHIFT)).astype(np.int32)


# --------------------------------------------------------------------------------------------
# Cells and the per-pixel geometry of one image
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Cells:
    """The cells of one image, one entry per cell; lengths in pixels, angles in radians."""

    centre_x: np.ndarray
    centre_y: np.ndarray
    semi_major: np.ndarray
    semi_minor: np.ndarray
    orientation: np.ndarray
    nucleus_x: np.ndarray
    nucleus_y: np.ndarray
    nucleus_major: np.ndarray
    nucleus_minor: np.ndarray
    nucleus_orientation: np.ndarray
    typical_radius: float

    @property
    def count(self) -> int:
        return len(self.centre_x)

    @property
    def nucleus_radius(self) -> np.ndarray:
        return np.sqrt(self.nucleus_major * self.nucleus_minor)


def _place_centres(size: int, wanted: int, spacing: float, rng: np.random.Generator) -> np.ndarray:
    """A colony: each new centre buds off a random earlier one at 1.2-1.55 x ``spacing``."""
    centres = [tuple(rng.uniform(0.25, 0.75, 2) * size)]
    attempts = rng.random((40 * wanted, 3))
    low, high = 0.04 * size, 0.96 * size
    for pick, direction, reach in attempts:
        if len(centres) == wanted:
            break
        parent_x, parent_y = centres[int(pick * len(centres))]
        distance = spacing * (1.2 + 0.35 * reach)
        x = parent_x + distance * math.cos(2 * math.pi * direction)
        y = parent_y + distance * math.sin(2 * math.pi * direction)
        if not (low <= x <= high and low <= y <= high):
            continue
        if all(math.hypot(x - cx, y - cy) >= 1.15 * spacing for cx, cy in centres):
            centres.append((x, y))
    return np.array(centres, dtype=np.float64)


def _place_cells(size: int, rng: np.random.Generator) -> _Cells:
    wanted = int(rng.integers(3, 9))
    typical_radius = size * math.sqrt(0.4 / (math.pi * wanted))
    centres = _place_centres(size, wanted, typical_radius, rng)
    count = len(centres)
    orientation = rng.uniform(0.0, math.pi, count)
    nucleus_major = typical_radius * rng.uniform(0.38, 0.5, count)
    nucleus_offset = typical_radius * rng.uniform(-0.08, 0.08, (2, count))
    return _Cells(
        centre_x=centres[:, 0],
        centre_y=centres[:, 1],
        semi_major=typical_radius * rng.uniform(1.0, 1.35, count),
        semi_minor=typical_radius * rng.uniform(0.85, 1.0, count),
        orientation=orientation,
        nucleus_x=centres[:, 0] + nucleus_offset[0],
        nucleus_y=centres[:, 1] + nucleus_offset[1],
        nucleus_major=nucleus_major,
        nucleus_minor=nucleus_major * rng.uniform(0.7, 0.95, count),
        nucleus_orientation=orientation + rng.uniform(-0.4, 0.4, count),
        typical_radius=typical_radius,
    )


@dataclass(frozen=True)
class _Filaments:
    """Radial filaments around each cell centre: bright where phase(angle, radius) = 2 pi j."""

    field: np.ndarray
    counts: np.ndarray
    phases: np.ndarray
    wave_amplitudes: np.ndarray
    wave_frequencies: np.ndarray  # radians per pixel of radius
    wave_phases: np.ndarray


class _Scene:
    """One image's cells and the per-pixel fields that the channels and motifs are built from.

    Per-pixel fields (S x S float32 unless noted), each pixel belonging to its nearest cell
    centre (a Voronoi partition, ``owner``) clipped to that cell's wobbly ellipse:
      in_cell, nucleus, cytoplasm: bool masks;
      cell_mask, nucleus_mask, cytoplasm_mask: the same with soft edges, 0..1;
      cell_dist, nucleus_dist: distance in px to the edge of the owner's cell / nucleus along
        the ray from its centre (negative inside);
      dx, dy, rho, phi: offset, distance and angle from the owner's cell centre.
    """

    def __init__(self, size: int, rng: np.random.Generator) -> None:
        self.size = size
        self.unit = size / REFERENCE_SIZE
        self.rng = rng
        self.cells = _place_cells(size, rng)
        self._build_geometry()
        self.nucleoli_y, self.nucleoli_x = self.points_in_nuclei(
            rng.integers(1, 5, self.cells.count), 0.55
        )
        self.nucleolus_sigma = 0.13 * float(self.cells.nucleus_radius.mean())
        self.nucleoli = self.spots(self.nucleoli_y, self.nucleoli_x, self.nucleolus_sigma)
        self.microtubules = self.radial_filaments((18, 30), (0.5, 1.5), 40.0, power=8)
        self.reticulum = self._reticular_network()

    # -- geometry ------------------------------------------------------------------------------

    def per_pixel(self, per_cell: np.ndarray) -> np.ndarray:
        """Spread a per-cell value over the pixels each cell owns."""
        return np.take(np.asarray(per_cell, dtype=np.float32), self.owner)

    def _build_geometry(self) -> None:
        cells = self.cells
        ys, xs = _pixel_grid(self.size)
        to_centre_x = xs[None] - cells.centre_x.astype(np.float32)[:, None, None]
        to_centre_y = ys[None] - cells.centre_y.astype(np.float32)[:, None, None]
        self.owner = np.argmin(to_centre_x**2 + to_centre_y**2, axis=0)

        self.dx = xs - self.per_pixel(cells.centre_x)
        self.dy = ys - self.per_pixel(cells.centre_y)
        self.rho = np.hypot(self.dx, self.dy)
        self.phi = np.arctan2(self.dy, self.dx)
        cell_r = self._ellipse_norm(
            self.dx, self.dy, cells.semi_major, cells.semi_minor, cells.orientation
        )
        cell_r *= 1.0 + 0.07 * np.clip(self.smooth_noise(grid=6), -2.5, 2.5)  # wobbly outline
        self.in_cell = cell_r < 1.0
        self.cell_dist = self.rho * (1.0 - 1.0 / np.maximum(cell_r, 1e-3))

        self.nucleus_dx = xs - self.per_pixel(cells.nucleus_x)
        self.nucleus_dy = ys - self.per_pixel(cells.nucleus_y)
        nucleus_r = self._ellipse_norm(
            self.nucleus_dx,
            self.nucleus_dy,
            cells.nucleus_major,
            cells.nucleus_minor,
            cells.nucleus_orientation,
        )
        nucleus_rho = np.hypot(self.nucleus_dx, self.nucleus_dy)
        self.nucleus_dist = nucleus_rho * (1.0 - 1.0 / np.maximum(nucleus_r, 1e-3))
        self.nucleus = self.in_cell & (self.nucleus_dist < 0)
        self.cytoplasm = self.in_cell & ~self.nucleus

        edge_width = max(1.5 * self.unit, 1.0)
        self.cell_mask = _soft_inside(self.cell_dist, edge_width)
        self.nucleus_mask = _soft_inside(self.nucleus_dist, edge_width) * self.in_cell
        self.cytoplasm_mask = self.cell_mask * (1.0 - self.nucleus_mask)

    def _ellipse_norm(
        self,
        dx: np.ndarray,
        dy: np.ndarray,
        semi_major: np.ndarray,
        semi_minor: np.ndarray,
        orientation: np.ndarray,
    ) -> np.ndarray:
        """Elliptical radius of each pixel in its owner's ellipse: 1 on the edge."""
        cos_o = self.per_pixel(np.cos(orientation))
        sin_o = self.per_pixel(np.sin(orientation))
        along = (dx * cos_o + dy * sin_o) / self.per_pixel(semi_major)
        across = (dy * cos_o - dx * sin_o) / self.per_pixel(semi_minor)
        return np.sqrt(along * along + across * across)

    @cached_property
    def nucleus_phi(self) -> np.ndarray:
        """Angle of each pixel around its owner's nucleus centre."""
        return np.arctan2(self.nucleus_dy, self.nucleus_dx)

    @cached_property
    def _label_image(self) -> np.ndarray:
        return np.where(self.in_cell, self.owner + 1, 0).astype(np.uint8)

    @cached_property
    def _boundaries(self) -> tuple[np.ndarray, np.ndarray]:
        """Masks of cell edges: every edge, and only edges where two cells touch."""
        width = 2 * max(1, round(self.unit)) + 1
        kernel = np.ones((width, width), np.uint8)
        labels = self._label_image
        highest = cv2.dilate(labels, kernel)
        lowest = cv2.erode(labels, kernel)
        edge = (highest != lowest) & (labels > 0)
        return edge, edge & (lowest > 0)

    @cached_property
    def outline(self) -> np.ndarray:
        return self._boundaries[0].astype(np.float32)

    @cached_property
    def junctions(self) -> np.ndarray:
        return self._boundaries[1].astype(np.float32)

    # -- textures ------------------------------------------------------------------------------

    def px(self, reference_px: float, minimum: float = 0.6) -> float:
        """A length given in reference pixels, in this image's pixels (at least ``minimum``)."""
        return max(reference_px * self.unit, minimum)

    def smooth_noise(self, grid: int) -> np.ndarray:
        """Smooth zero-mean noise with about ``grid`` bumps across the image, std ~1."""
        coarse = self.rng.standard_normal((grid, grid)).astype(np.float32)
        return cv2.resize(coarse, (self.size, self.size), interpolation=cv2.INTER_CUBIC)

    def band_noise(self, sigma_px: float) -> np.ndarray:
        """Gaussian-blurred white noise with structures ~``sigma_px`` wide, std 1."""
        white = _white_noise(self.rng, (self.size, self.size))
        return _blur(white, sigma_px) * _blurred_noise_gain(round(sigma_px, 3))

    def radial_filaments(
        self,
        count_range: tuple[int, int],
        wave_range: tuple[float, float],
        wave_period_reference_px: float,
        power: int,
    ) -> _Filaments:
        n = self.cells.count
        counts = self.rng.integers(count_range[0], count_range[1] + 1, n)
        phases = self.rng.uniform(0.0, 2 * math.pi, n)
        wave_amplitudes = self.rng.uniform(*wave_range, n)
        wave_periods = self.rng.uniform(0.8, 1.2, n) * wave_period_reference_px * self.unit
        wave_frequencies = 2 * math.pi / wave_periods
        wave_phases = self.rng.uniform(0.0, 2 * math.pi, n)
        wave = self.per_pixel(wave_amplitudes) * np.sin(
            self.per_pixel(wave_frequencies) * self.rho + self.per_pixel(wave_phases)
        )
        phase = self.per_pixel(counts) * self.phi + self.per_pixel(phases) + wave
        uneven = np.clip(0.65 + 0.35 * self.band_noise(self.px(5.0)), 0.2, 1.0)
        return _Filaments(
            _ridges(phase, power) * uneven,
            counts,
            phases,
            wave_amplitudes,
            wave_frequencies,
            wave_phases,
        )

    def _reticular_network(self) -> np.ndarray:
        # Zero crossings of smooth noise form a mesh of thin closed lines, like the ER.
        noise = self.band_noise(self.px(1.8, 0.9))
        return np.exp(-6.0 * noise * noise)

    @cached_property
    def perinuclear_weight(self) -> np.ndarray:
        """1 at the nucleus edge, decaying outwards over about half a cell radius."""
        reach = 0.5 * self.cells.typical_radius
        return np.exp(-np.maximum(self.nucleus_dist, 0.0) / reach)

    # -- drawing -------------------------------------------------------------------------------

    def canvas(self) -> np.ndarray:
        return np.zeros((self.size, self.size), np.float32)

    def spots(
        self, ys: np.ndarray, xs: np.ndarray, sigma_px: float, amplitudes: np.ndarray | float = 1.0
    ) -> np.ndarray:
        """Gaussian spots of peak ``amplitudes`` at the given pixel positions."""
        canvas = self.canvas()
        rows = np.rint(ys).astype(np.intp)
        columns = np.rint(xs).astype(np.intp)
        amplitudes = np.broadcast_to(np.asarray(amplitudes, np.float32), rows.shape)
        inside = (rows >= 0) & (rows < self.size) & (columns >= 0) & (columns < self.size)
        np.add.at(canvas, (rows[inside], columns[inside]), amplitudes[inside])
        return _blur(canvas, sigma_px) * _spot_peak_gain(round(sigma_px, 3))

    def random_points(self, mask: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        """``count`` random pixel positions (with sub-pixel jitter) where ``mask`` is true."""
        candidates = np.flatnonzero(mask)
        if candidates.size == 0 or count <= 0:
            return np.zeros(0), np.zeros(0)
        picks = candidates[self.rng.integers(0, candidates.size, count)]
        rows, columns = np.divmod(picks, self.size)
        jitter = self.rng.random((2, count)) - 0.5
        return rows + jitter[0], columns + jitter[1]

    def count_for(self, mask: np.ndarray, reference_area_per_object: float) -> int:
        """How many objects of a given density fit in ``mask`` (area in reference pixels)."""
        area = float(np.count_nonzero(mask)) / (self.unit * self.unit)
        return int(round(area / reference_area_per_object * self.rng.uniform(0.7, 1.3)))

    def points_in_nuclei(
        self, counts: np.ndarray, max_radius: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """``counts[k]`` random points inside nucleus k, within ``max_radius`` of its size."""
        cells = self.cells
        index = np.repeat(np.arange(cells.count), counts)
        radius = max_radius * np.sqrt(self.rng.random(index.size))
        angle = self.rng.uniform(0.0, 2 * math.pi, index.size)
        along = cells.nucleus_major[index] * radius * np.cos(angle)
        across = cells.nucleus_minor[index] * radius * np.sin(angle)
        cos_o, sin_o = (
            np.cos(cells.nucleus_orientation[index]),
            np.sin(cells.nucleus_orientation[index]),
        )
        xs = cells.nucleus_x[index] + along * cos_o - across * sin_o
        ys = cells.nucleus_y[index] + along * sin_o + across * cos_o
        return ys, xs

    def beside_nuclei(
        self, directions: np.ndarray, gap_px: np.ndarray | float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Points ``gap_px`` outside each nucleus edge; ``directions`` is (cells, points)."""
        cells = self.cells
        edge = _ellipse_radius(
            directions,
            cells.nucleus_major[:, None],
            cells.nucleus_minor[:, None],
            cells.nucleus_orientation[:, None],
        )
        distance = edge + gap_px
        ys = cells.nucleus_y[:, None] + distance * np.sin(directions)
        xs = cells.nucleus_x[:, None] + distance * np.cos(directions)
        return ys.ravel(), xs.ravel()

    def owned_by(self, ys: np.ndarray, xs: np.ndarray, cell_index: int) -> np.ndarray:
        """Which points fall inside the image and in cell ``cell_index``."""
        rows = np.rint(ys).astype(np.intp)
        columns = np.rint(xs).astype(np.intp)
        inside = (rows >= 0) & (rows < self.size) & (columns >= 0) & (columns < self.size)
        rows, columns = np.where(inside, rows, 0), np.where(inside, columns, 0)
        return inside & self.in_cell[rows, columns] & (self.owner[rows, columns] == cell_index)


# --------------------------------------------------------------------------------------------
# Green localisation motifs, one per class; each returns an S x S float32 map peaking near 1
# --------------------------------------------------------------------------------------------


def _nucleoplasm(s: _Scene) -> np.ndarray:
    texture = 0.8 + 0.2 * s.band_noise(s.px(2.0))
    return s.nucleus_mask * texture * (1.0 - 0.7 * np.minimum(s.nucleoli, 1.0))


def _nuclear_membrane(s: _Scene) -> np.ndarray:
    width = s.px(1.3, 0.8)
    ring = np.exp(-((s.nucleus_dist / width) ** 2))
    return ring * s.in_cell * (0.75 + 0.25 * s.band_noise(s.px(2.0)))


def _nucleoli(s: _Scene) -> np.ndarray:
    return np.minimum(s.nucleoli, 1.0) + 0.08 * s.nucleus_mask


def _nucleoli_fibrillar_center(s: _Scene) -> np.ndarray:
    per_nucleolus = s.rng.integers(2, 6, s.nucleoli_y.size)
    ys = np.repeat(s.nucleoli_y, per_nucleolus)
    xs = np.repeat(s.nucleoli_x, per_nucleolus)
    offsets = s.rng.normal(0.0, 0.7 * s.nucleolus_sigma, (2, ys.size))
    dots = s.spots(ys + offsets[0], xs + offsets[1], s.px(0.8), s.rng.uniform(0.7, 1.0, ys.size))
    return dots + 0.12 * np.minimum(s.nucleoli, 1.0)


def _nuclear_speckles(s: _Scene) -> np.ndarray:
    ys, xs = s.random_points(s.nucleus, s.count_for(s.nucleus, 55.0))
    speckles = s.spots(ys, xs, s.px(1.3), s.rng.uniform(0.5, 1.0, ys.size))
    return (speckles + 0.15 * s.nucleus_mask) * (1.0 - 0.8 * np.minimum(s.nucleoli, 1.0))


def _nuclear_bodies(s: _Scene) -> np.ndarray:
    ys, xs = s.points_in_nuclei(s.rng.integers(1, 4, s.cells.count), 0.7)
    return s.spots(ys, xs, s.px(1.7), 1.2) + 0.08 * s.nucleus_mask


def _endoplasmic_reticulum(s: _Scene) -> np.ndarray:
    return _yellow_signal(s) * (0.85 + 0.15 * s.band_noise(s.px(3.0)))


def _golgi_apparatus(s: _Scene) -> np.ndarray:
    facing = s.rng.uniform(0.0, 2 * math.pi, s.cells.count)
    alignment = np.cos(s.nucleus_phi - s.per_pixel(facing))  # 1 on the chosen side
    crescent = np.clip((alignment - 0.35) / 0.65, 0.0, 1.0) ** 2
    depth = 0.5 * s.per_pixel(s.cells.nucleus_radius)
    band = np.exp(-(((s.nucleus_dist - 0.4 * depth) / (0.45 * depth)) ** 2))
    clumps = np.clip(0.6 + 0.6 * s.band_noise(s.px(1.2)), 0.0, 1.0)
    return crescent * band * clumps * s.cytoplasm_mask * 1.2


def _peroxisomes(s: _Scene) -> np.ndarray:
    ys, xs = s.random_points(s.cytoplasm, s.count_for(s.cytoplasm, 60.0))
    return s.spots(ys, xs, s.px(0.8), s.rng.uniform(0.5, 1.0, ys.size))


def _endosomes(s: _Scene) -> np.ndarray:
    ys, xs = s.random_points(s.cytoplasm, s.count_for(s.cytoplasm, 180.0))
    return s.spots(ys, xs, s.px(1.8), s.rng.uniform(0.4, 1.0, ys.size))


def _lysosomes(s: _Scene) -> np.ndarray:
    near = s.cytoplasm & (s.nucleus_dist < 0.45 * s.cells.typical_radius)
    ys, xs = s.random_points(near, s.count_for(near, 90.0))
    return s.spots(ys, xs, s.px(1.3), s.rng.uniform(0.5, 1.0, ys.size))


def _intermediate_filaments(s: _Scene) -> np.ndarray:
    fibres = s.radial_filaments((10, 16), (1.0, 2.0), 30.0, power=6).field
    return fibres * s.cytoplasm_mask * (0.55 + 0.45 * s.perinuclear_weight)


def _actin_filaments(s: _Scene) -> np.ndarray:
    direction = s.rng.uniform(0.0, math.pi, s.cells.count)
    offset = s.rng.uniform(0.0, 2 * math.pi, s.cells.count)
    across = s.dy * s.per_pixel(np.cos(direction)) - s.dx * s.per_pixel(np.sin(direction))
    period = max(5.0 * s.unit, 3.2)
    fibres = _ridges(2 * math.pi * across / period + s.per_pixel(offset), power=4)
    broken = np.clip(0.3 + 0.7 * s.smooth_noise(grid=max(6, s.size // 16)), 0.0, 1.0)
    return fibres * broken * s.cell_mask


def _focal_adhesion_sites(s: _Scene) -> np.ndarray:
    canvas = s.canvas()
    cells = s.cells
    length = s.px(5.0, 2.0)
    thickness = max(1, round(1.2 * s.unit))
    for k in range(cells.count):
        directions = s.rng.uniform(0.0, 2 * math.pi, int(s.rng.integers(7, 14)))
        reach = 0.82 * _ellipse_radius(
            directions, cells.semi_major[k], cells.semi_minor[k], cells.orientation[k]
        )
        ys = cells.centre_y[k] + reach * np.sin(directions)
        xs = cells.centre_x[k] + reach * np.cos(directions)
        keep = s.owned_by(ys, xs, k)
        for direction, y, x in zip(directions[keep], ys[keep], xs[keep], strict=True):
            start = _fixed_point([x, y])
            end = _fixed_point([x + length * math.cos(direction), y + length * math.sin(direction)])
            cv2.line(canvas, start.tolist(), end.tolist(), 1.0, thickness, cv2.LINE_8, _DRAW_SHIFT)
    return _blur(canvas, s.px(0.6)) * s.cell_mask


def _microtubules(s: _Scene) -> np.ndarray:
    return _red_signal(s) * (0.8 + 0.2 * s.band_noise(s.px(3.0)))


def _microtubule_ends(s: _Scene) -> np.ndarray:
    fil, cells = s.microtubules, s.cells
    all_ys, all_xs = [], []
    for k in range(cells.count):
        base = (2 * math.pi * np.arange(fil.counts[k]) - fil.phases[k]) / fil.counts[k]
        directions = base
        for _ in range(3):  # the wave shifts each filament's angle by an amount set by its radius
            radius = 0.88 * _ellipse_radius(
                directions, cells.semi_major[k], cells.semi_minor[k], cells.orientation[k]
            )
            wave = fil.wave_amplitudes[k] * np.sin(
                fil.wave_frequencies[k] * radius + fil.wave_phases[k]
            )
            directions = base - wave / fil.counts[k]
        radius = 0.88 * _ellipse_radius(
            directions, cells.semi_major[k], cells.semi_minor[k], cells.orientation[k]
        )
        ys = cells.centre_y[k] + radius * np.sin(directions)
        xs = cells.centre_x[k] + radius * np.cos(directions)
        keep = s.owned_by(ys, xs, k) & (s.rng.random(ys.size) < 0.6)
        all_ys.append(ys[keep])
        all_xs.append(xs[keep])
    ys, xs = np.concatenate(all_ys), np.concatenate(all_xs)
    return s.spots(ys, xs, s.px(1.0), s.rng.uniform(0.7, 1.0, ys.size)) + 0.05 * s.cytoplasm_mask


def _cytokinetic_bridge(s: _Scene) -> np.ndarray:
    cells = s.cells
    if cells.count < 2:
        return s.canvas()
    # Daughter cells: of the pairs (cell, its nearest neighbour), the one furthest apart, so the
    # bridge has room between the two nuclei.
    distances = np.hypot(
        cells.nucleus_x[:, None] - cells.nucleus_x, cells.nucleus_y[:, None] - cells.nucleus_y
    )
    np.fill_diagonal(distances, np.inf)
    nearest = np.argmin(distances, axis=1)
    first = int(np.argmax(distances[np.arange(cells.count), nearest]))
    second = int(nearest[first])
    direction = math.atan2(
        cells.nucleus_y[second] - cells.nucleus_y[first],
        cells.nucleus_x[second] - cells.nucleus_x[first],
    )
    gap = s.px(2.0)
    start_y, start_x = s.beside_nuclei(np.full((cells.count, 1), direction), gap)
    end_y, end_x = s.beside_nuclei(np.full((cells.count, 1), direction + math.pi), gap)
    start = _fixed_point([start_x[first], start_y[first]])
    end = _fixed_point([end_x[second], end_y[second]])
    canvas = s.canvas()
    cv2.line(
        canvas, start.tolist(), end.tolist(), 1.3, max(1, round(s.unit)), cv2.LINE_8, _DRAW_SHIFT
    )
    bridge = _blur(canvas, s.px(0.6))
    mid_y = np.array([(start_y[first] + end_y[second]) / 2])
    mid_x = np.array([(start_x[first] + end_x[second]) / 2])
    return bridge + s.spots(mid_y, mid_x, s.px(1.8), 1.3)


def _mitotic_spindle(s: _Scene) -> np.ndarray:
    cells = s.cells
    k = int(s.rng.integers(cells.count))
    axis = s.rng.uniform(0.0, math.pi)
    half_length = 1.1 * float(cells.nucleus_radius[k])
    ys, xs = _pixel_grid(s.size)
    dx, dy = xs - cells.nucleus_x[k], ys - cells.nucleus_y[k]
    along = dx * math.cos(axis) + dy * math.sin(axis)
    across = dy * math.cos(axis) - dx * math.sin(axis)
    closeness = np.clip(1.0 - np.abs(along) / half_length, 0.0, 1.0)  # 1 mid-spindle, 0 at poles
    half_width = 0.5 * half_length * closeness + 0.5
    relative = across / half_width
    fibres = 0.5 + 0.5 * _ridges(2 * math.pi * 2.5 * relative, power=2)
    body = np.exp(-(relative**4)) * np.sqrt(closeness) * fibres
    pole_y = cells.nucleus_y[k] + half_length * math.sin(axis) * np.array([1.0, -1.0])
    pole_x = cells.nucleus_x[k] + half_length * math.cos(axis) * np.array([1.0, -1.0])
    return body + s.spots(pole_y, pole_x, s.px(1.4), 1.0)


def _microtubule_organizing_center(s: _Scene) -> np.ndarray:
    directions = s.rng.uniform(0.0, 2 * math.pi, (s.cells.count, 1))
    ys, xs = s.beside_nuclei(directions, s.px(3.0))
    return (
        s.spots(ys, xs, s.px(1.9), 1.3) + s.spots(ys, xs, s.px(4.5), 0.25) + 0.06 * s.cytoplasm_mask
    )


def _centrosome(s: _Scene) -> np.ndarray:
    directions = s.rng.uniform(0.0, 2 * math.pi, (s.cells.count, 1))
    ys, xs = s.beside_nuclei(directions, s.px(3.0))
    split = s.rng.uniform(0.0, 2 * math.pi, ys.size)
    separation = s.px(3.5, 1.5)
    pair_ys = np.concatenate([ys, ys + separation * np.sin(split)])
    pair_xs = np.concatenate([xs, xs + separation * np.cos(split)])
    return s.spots(pair_ys, pair_xs, s.px(1.0), 1.0)


def _lipid_droplets(s: _Scene) -> np.ndarray:
    count = int(s.rng.integers(3, 9)) * s.cells.count
    ys, xs = s.random_points(s.cytoplasm, count)
    radii = np.maximum(s.rng.uniform(2.5, 4.5, ys.size) * s.unit, 2.0)
    canvas = s.canvas()
    thickness = max(1, round(0.8 * s.unit))
    for y, x, radius in zip(ys, xs, radii, strict=True):
        centre = _fixed_point([x, y]).tolist()
        cv2.circle(
            canvas, centre, int(_fixed_point(radius)), 1.0, thickness, cv2.LINE_8, _DRAW_SHIFT
        )
    return _blur(canvas, s.px(0.6))


def _plasma_membrane(s: _Scene) -> np.ndarray:
    return _blur(s.outline, s.px(0.7)) * (0.75 + 0.25 * s.band_noise(s.px(2.0)))


def _cell_junctions(s: _Scene) -> np.ndarray:
    return _blur(s.junctions, s.px(0.7)) * 1.2


def _mitochondria(s: _Scene) -> np.ndarray:
    ys, xs = s.random_points(s.cytoplasm, s.count_for(s.cytoplasm, 45.0))
    lengths = s.rng.uniform(3.0, 7.0, ys.size) * s.unit
    heading = s.rng.uniform(0.0, 2 * math.pi, ys.size)
    bend = heading + s.rng.uniform(-0.9, 0.9, ys.size)
    middle_x, middle_y = xs + 0.5 * lengths * np.cos(heading), ys + 0.5 * lengths * np.sin(heading)
    end_x, end_y = middle_x + 0.5 * lengths * np.cos(bend), middle_y + 0.5 * lengths * np.sin(bend)
    worms = _fixed_point(
        np.stack([np.stack([xs, middle_x, end_x], 1), np.stack([ys, middle_y, end_y], 1)], 2)
    )
    canvas = s.canvas()
    thickness = max(1, round(s.unit))
    cv2.polylines(canvas, list(worms), False, 0.9, thickness, cv2.LINE_8, _DRAW_SHIFT)
    return _blur(canvas, s.px(0.6)) * s.cytoplasm_mask


def _aggresome(s: _Scene) -> np.ndarray:
    cells = s.cells
    directions = s.rng.uniform(0.0, 2 * math.pi, (cells.count, 1))
    ys, xs = s.beside_nuclei(directions, 0.35 * cells.nucleus_radius[:, None])
    chosen = s.rng.random(cells.count) < 0.7
    chosen[s.rng.integers(cells.count)] = True
    sigma = 0.22 * float(cells.nucleus_radius.mean())
    return s.spots(ys[chosen], xs[chosen], sigma, 1.4) + 0.08 * s.cytoplasm_mask


def _cytosol(s: _Scene) -> np.ndarray:
    return s.cytoplasm_mask * (0.6 + 0.12 * s.band_noise(s.px(3.0)))


def _cytoplasmic_bodies(s: _Scene) -> np.ndarray:
    count = int(s.rng.integers(1, 4)) * s.cells.count
    ys, xs = s.random_points(s.cytoplasm, count)
    radii = np.maximum(s.rng.uniform(2.5, 4.0, ys.size) * s.unit, 1.2)
    canvas = s.canvas()
    for y, x, radius in zip(ys, xs, radii, strict=True):
        centre = _fixed_point([x, y]).tolist()
        cv2.circle(canvas, centre, int(_fixed_point(radius)), 1.0, -1, cv2.LINE_8, _DRAW_SHIFT)
    return _blur(canvas, s.px(0.9))


def _rods_and_rings(s: _Scene) -> np.ndarray:
    count = int(s.rng.integers(2, 6)) * s.cells.count
    ys, xs = s.random_points(s.cytoplasm, count)
    is_ring = s.rng.random(ys.size) < 0.5
    headings = s.rng.uniform(0.0, 2 * math.pi, ys.size)
    rod_length = s.px(7.0, 3.0)
    ring_radius = s.px(2.5, 1.5)
    thickness = max(1, round(s.unit))
    canvas = s.canvas()
    for y, x, ring, heading in zip(ys, xs, is_ring, headings, strict=True):
        if ring:
            centre = _fixed_point([x, y]).tolist()
            cv2.circle(
                canvas,
                centre,
                int(_fixed_point(ring_radius)),
                1.0,
                thickness,
                cv2.LINE_8,
                _DRAW_SHIFT,
            )
        else:
            half = 0.5 * rod_length * np.array([math.cos(heading), math.sin(heading)])
            start = _fixed_point(np.array([x, y]) - half).tolist()
            end = _fixed_point(np.array([x, y]) + half).tolist()
            cv2.line(canvas, start, end, 1.0, thickness, cv2.LINE_8, _DRAW_SHIFT)
    return _blur(canvas, s.px(0.6)) * 1.5


_MOTIFS: tuple[Callable[[_Scene], np.ndarray], ...] = (
    _nucleoplasm,
    _nuclear_membrane,
    _nucleoli,
    _nucleoli_fibrillar_center,
    _nuclear_speckles,
    _nuclear_bodies,
    _endoplasmic_reticulum,
    _golgi_apparatus,
    _peroxisomes,
    _endosomes,
    _lysosomes,
    _intermediate_filaments,
    _actin_filaments,
    _focal_adhesion_sites,
    _microtubules,
    _microtubule_ends,
    _cytokinetic_bridge,
    _mitotic_spindle,
    _microtubule_organizing_center,
    _centrosome,
    _lipid_droplets,
    _plasma_membrane,
    _cell_junctions,
    _mitochondria,
    _aggresome,
    _cytosol,
    _cytoplasmic_bodies,
    _rods_and_rings,
)
assert len(_MOTIFS) == NUM_CLASSES


# --------------------------------------------------------------------------------------------
# Channels and the whole image
# --------------------------------------------------------------------------------------------


def _red_signal(s: _Scene) -> np.ndarray:
    return s.cell_mask * (1.0 - 0.6 * s.nucleus_mask) * (0.2 + 0.8 * s.microtubules.field)


def _yellow_signal(s: _Scene) -> np.ndarray:
    network = 0.3 + 0.7 * s.reticulum
    return s.cytoplasm_mask * s.perinuclear_weight * network


def _blue_signal(s: _Scene) -> np.ndarray:
    brightness = s.per_pixel(s.rng.uniform(0.7, 1.0, s.cells.count))
    texture = 0.85 + 0.15 * s.band_noise(s.px(1.5))
    return s.nucleus_mask * brightness * texture * (1.0 - 0.35 * np.minimum(s.nucleoli, 1.0))


def _green_signal(s: _Scene, class_ids: Sequence[int]) -> np.ndarray:
    total = 0.02 * s.cell_mask
    for class_id in class_ids:
        total = total + s.rng.uniform(0.65, 1.0) * _MOTIFS[class_id](s)
    return np.clip(total, 0.0, 1.0)


_GAIN_RANGES = {
    "red": (0.5, 0.9),
    "green": (0.55, 1.0),
    "blue": (0.55, 1.0),
    "yellow": (0.45, 0.85),
}
"""Per-image brightness of each stain, drawn uniformly from these ranges."""


def _photograph(signals: np.ndarray, s: _Scene) -> np.ndarray:
    """Optics (blur), exposure (gain, offset) and camera noise of (4, S, S) signals, to 8 bits."""
    sigma = s.px(0.6, 0.4)
    blurred = np.stack([_blur(signal, sigma) for signal in signals.astype(np.float32, copy=False)])
    low, high = np.array([_GAIN_RANGES[color] for color in CHANNELS], dtype=np.float32).T
    gains = s.rng.uniform(low, high).astype(np.float32)[:, None, None]
    image = np.maximum(blurred, 0.0) * gains
    offsets = s.rng.uniform(0.005, 0.03, (len(CHANNELS), 1, 1)).astype(np.float32)
    noise_levels = s.rng.uniform(0.006, 0.015, (len(CHANNELS), 1, 1)).astype(np.float32)
    noise = _white_noise(s.rng, image.shape)
    image = image + offsets + noise * (noise_levels + 0.03 * np.sqrt(image))  # read + shot noise
    image = image * np.float32(255.0) + np.float32(0.5)
    return np.clip(image, 0.0, 255.0, out=image).astype(np.uint8)


def render_sample(
    labels_row: Sequence[int] | np.ndarray, image_size: int, rng: np.random.Generator
) -> np.ndarray:
    """One synthetic image with these labels: uint8 (4, S, S) in RGBY order (CHANNELS).

    ``labels_row`` is a length-28 multi-hot vector; the green channel is the clipped sum of
    the motifs of its classes, with brightness varying per image.
    """
    labels_row = np.asarray(labels_row)
    if labels_row.shape != (NUM_CLASSES,):
        raise ValueError(
            f"expected a multi-hot vector of {NUM_CLASSES} classes, got shape {labels_row.shape}"
        )
    if (
        isinstance(image_size, bool)
        or not isinstance(image_size, int | np.integer)
        or image_size < MIN_IMAGE_SIZE
    ):
        raise ValueError(f"image size must be an integer >= {MIN_IMAGE_SIZE}, got {image_size!r}")
    scene = _Scene(int(image_size), rng)
    signals = {
        "red": _red_signal(scene),
        "green": _green_signal(scene, np.flatnonzero(labels_row).tolist()),
        "blue": _blue_signal(scene),
        "yellow": _yellow_signal(scene),
    }
    return _photograph(np.stack([signals[color] for color in CHANNELS]), scene)


# --------------------------------------------------------------------------------------------
# Data set on disk
# --------------------------------------------------------------------------------------------


def _image_rng(seed: int, split: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, split, index]))


def _sample_id(rng: np.random.Generator) -> str:
    return str(uuid.UUID(bytes=rng.bytes(16)))


def _write_split(
    image_dir: Path, split: int, count: int, image_size: int, seed: int, bar: tqdm
) -> list[tuple[str, str]]:
    """Render and write ``count`` images; returns (Id, Target) rows in index order."""
    image_dir.mkdir(parents=True)
    rows = []
    for index in range(count):
        rng = _image_rng(seed, split, index)
        sample_id = _sample_id(rng)
        labels = sample_labels(1, rng)[0]
        image = render_sample(labels, image_size, rng)
        for color, plane in zip(CHANNELS, image, strict=True):
            path = image_dir / f"{sample_id}_{color}.png"
            if not cv2.imwrite(str(path), plane, _PNG_PARAMS):
                raise OSError(f"could not write {path}")
        rows.append((sample_id, format_target(labels)))
        bar.update(1)
    return rows


def _write_csv(path: Path, header: tuple[str, str], rows: list[tuple[str, str]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _manifest(num_images: int, image_size: int, seed: int, num_test: int) -> dict[str, int]:
    return {
        "format_version": FORMAT_VERSION,
        "num_images": num_images,
        "image_size": image_size,
        "seed": seed,
        "num_test": num_test,
    }


def _read_manifest(root: Path) -> dict | None:
    try:
        manifest = json.loads((root / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def is_complete(root: str | Path) -> bool:
    """True when ``root`` holds a finished synthetic set: a readable manifest and train.csv."""
    root = Path(root)
    manifest = _read_manifest(root)
    return (
        manifest is not None
        and manifest.get("format_version") == FORMAT_VERSION
        and (root / "train.csv").is_file()
    )


def _check_replaceable(root: Path) -> None:
    """Refuse to overwrite anything that is not an empty directory or a synthetic set."""
    if not root.exists() and not root.is_symlink():
        return
    if not root.is_dir():
        raise HPAInputError(f"{root} exists and is not a directory; refusing to replace it")
    if (root / MANIFEST_NAME).is_file() or not any(root.iterdir()):
        return
    raise HPAInputError(
        f"{root} is a non-empty directory without {MANIFEST_NAME}, so it may hold real data; "
        "refusing to overwrite it with a synthetic set. Choose another directory or delete it."
    )


def _check_parameters(num_images: int, image_size: int, seed: int, num_test: int) -> None:
    for name, value, minimum in (
        ("num_images", num_images, 1),
        ("image_size", image_size, MIN_IMAGE_SIZE),
        ("seed", seed, 0),
        ("num_test", num_test, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def generate_dataset(
    root: str | Path,
    num_images: int,
    image_size: int = 256,
    seed: int = 0,
    num_test: int = 0,
    progress: bool = True,
) -> Path:
    """Write a synthetic set in the Kaggle layout to ``root``, replacing an old synthetic set.

    Raises HPAInputError when ``root`` is a non-empty directory that is not a synthetic set.
    """
    _check_parameters(num_images, image_size, seed, num_test)
    root = Path(os.path.abspath(root))  # normalises "." and "x/" so the sibling name is sane
    _check_replaceable(root)
    work_dir = root.with_name(f"{root.name}.tmp-{os.getpid()}")
    if work_dir.exists():
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True)
    logger.info(
        "generating %d train + %d test synthetic images of %d px (seed %d) into %s",
        num_images,
        num_test,
        image_size,
        seed,
        root,
    )
    try:
        with tqdm(
            total=num_images + num_test, disable=not progress, unit="img", desc="synthetic"
        ) as bar:
            train_rows = _write_split(
                work_dir / "train", _TRAIN_SPLIT, num_images, image_size, seed, bar
            )
            test_rows = []
            if num_test > 0:
                test_rows = _write_split(
                    work_dir / "test", _TEST_SPLIT, num_test, image_size, seed, bar
                )
        ids = [sample_id for sample_id, _ in train_rows + test_rows]
        if len(set(ids)) != len(ids):  # 128-bit random ids: never expected
            raise RuntimeError("synthetic sample ids collided; try another seed")
        _write_csv(work_dir / "train.csv", ("Id", "Target"), train_rows)
        if num_test > 0:
            _write_csv(
                work_dir / "sample_submission.csv",
                ("Id", "Predicted"),
                [(i, "0") for i, _ in test_rows],
            )
            _write_csv(work_dir / "test_labels.csv", ("Id", "Target"), test_rows)
        manifest = _manifest(num_images, image_size, seed, num_test)
        (work_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
        _move_into_place(work_dir, root, manifest)
    except BaseException:
        shutil.rmtree(work_dir, ignore_errors=True)
        raise
    logger.info("synthetic set ready in %s", root)
    return root


def _move_into_place(work_dir: Path, root: Path, manifest: dict[str, int]) -> None:
    _check_replaceable(root)
    # Move an old set aside (one rename) before deleting it: a process killed while deleting it
    # must not leave ROOT with its manifest and train.csv but some images gone.
    old_set = root.with_name(f"{root.name}.old-{os.getpid()}")
    if root.is_dir():
        os.rename(root, old_set)
        shutil.rmtree(old_set)
    try:
        os.rename(work_dir, root)
    except OSError:
        # Another process may have finished the same set first (e.g. several ranks at once).
        if is_complete(root) and _read_manifest(root) == manifest:
            logger.info("%s was completed by another process meanwhile; using it", root)
            shutil.rmtree(work_dir, ignore_errors=True)
            return
        raise


def ensure_dataset(
    root: str | Path,
    num_images: int,
    image_size: int,
    seed: int,
    num_test: int = 0,
    progress: bool = True,
) -> Path:
    """``root`` if it already holds a complete set with these parameters, else generate it."""
    _check_parameters(num_images, image_size, seed, num_test)
    root = Path(root)
    if is_complete(root) and _read_manifest(root) == _manifest(
        num_images, image_size, seed, num_test
    ):
        logger.info("using the existing synthetic set in %s", root)
        return root
    return generate_dataset(root, num_images, image_size, seed, num_test, progress)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hpa.data.synthetic",
        description="Write (or reuse) a synthetic HPA data set in the Kaggle layout.",
    )
    parser.add_argument("root", type=Path, help="directory to write (replaced if synthetic)")
    parser.add_argument("--n", type=int, required=True, help="number of train images")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-test", type=int, default=0, help="number of test images")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        ensure_dataset(args.root, args.n, args.size, args.seed, args.n_test, not args.no_progress)
    except (HPAInputError, ValueError) as error:
        logger.error("%s", error)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
