"""The cells of one synthetic image and the per-pixel fields its stains and motifs are drawn from.

An image is a small colony of cells (``Cells``): each has a wobbly elliptical outline and an
elliptical nucleus holding a few nucleoli, with radial microtubules and a reticular endoplasmic
reticulum around it. ``Scene`` turns them into per-pixel maps and offers the drawing helpers
the motifs use; ``Scene.compartment_masks`` gives the compartments as boolean masks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np

from hpa.data.synthetic.raster import (
    blur,
    blurred_noise_gain,
    ellipse_radius,
    pixel_grid,
    ridges,
    soft_inside,
    spot_peak_gain,
    white_noise,
)

MIN_IMAGE_SIZE = 32
REFERENCE_SIZE = 256
"""Motif sizes are given in pixels of a REFERENCE_SIZE image and scale with the size."""

COMPARTMENTS: tuple[str, ...] = (
    "nucleus",
    "nucleoli",
    "nuclear_membrane",
    "cytoplasm",
    "cell_membrane",
    "cell",
)
"""Names of the masks of Scene.compartment_masks. They overlap: nucleoli lie in the nucleus,
the nuclear membrane straddles the nucleus edge, the cell membrane is a band inside each cell's
edge (also where two cells touch), and the cell is nucleus plus cytoplasm."""


@dataclass(frozen=True)
class Cells:
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


def place_cells(size: int, rng: np.random.Generator) -> Cells:
    wanted = int(rng.integers(3, 9))
    typical_radius = size * math.sqrt(0.4 / (math.pi * wanted))
    centres = _place_centres(size, wanted, typical_radius, rng)
    count = len(centres)
    orientation = rng.uniform(0.0, math.pi, count)
    nucleus_major = typical_radius * rng.uniform(0.38, 0.5, count)
    nucleus_offset = typical_radius * rng.uniform(-0.08, 0.08, (2, count))
    return Cells(
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
class Filaments:
    """Radial filaments around each cell centre: bright where phase(angle, radius) = 2 pi j."""

    field: np.ndarray
    counts: np.ndarray
    phases: np.ndarray
    wave_amplitudes: np.ndarray
    wave_frequencies: np.ndarray  # radians per pixel of radius
    wave_phases: np.ndarray


class Scene:
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
        self.cells = place_cells(size, rng)
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
        ys, xs = pixel_grid(self.size)
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

        self.edge_width = max(1.5 * self.unit, 1.0)
        self.cell_mask = soft_inside(self.cell_dist, self.edge_width)
        self.nucleus_mask = soft_inside(self.nucleus_dist, self.edge_width) * self.in_cell
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
        white = white_noise(self.rng, (self.size, self.size))
        return blur(white, sigma_px) * blurred_noise_gain(round(sigma_px, 3))

    def radial_filaments(
        self,
        count_range: tuple[int, int],
        wave_range: tuple[float, float],
        wave_period_reference_px: float,
        power: int,
    ) -> Filaments:
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
        return Filaments(
            ridges(phase, power) * uneven,
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

    @cached_property
    def microtubule_stain(self) -> np.ndarray:
        """Microtubules as a stain shows them: throughout each cell, faint over its nucleus."""
        return (
            self.cell_mask * (1.0 - 0.6 * self.nucleus_mask) * (0.2 + 0.8 * self.microtubules.field)
        )

    @cached_property
    def reticulum_stain(self) -> np.ndarray:
        """The endoplasmic reticulum as a stain shows it: a mesh densest around the nucleus."""
        network = 0.3 + 0.7 * self.reticulum
        return self.cytoplasm_mask * self.perinuclear_weight * network

    # -- compartments --------------------------------------------------------------------------

    def compartment_masks(self) -> dict[str, np.ndarray]:
        """{name: S x S bool mask} for each name of COMPARTMENTS; they overlap (see there)."""
        membrane_band = np.abs(self.nucleus_dist) <= self.edge_width
        masks = {
            "nucleus": self.nucleus,
            "nucleoli": self.nucleus & (self.nucleoli >= 0.5),  # a spot's full width at half max
            "nuclear_membrane": self.in_cell & membrane_band,
            "cytoplasm": self.cytoplasm,
            "cell_membrane": self._boundaries[0],
            "cell": self.in_cell,
        }
        return {name: masks[name].copy() for name in COMPARTMENTS}

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
        return blur(canvas, sigma_px) * spot_peak_gain(round(sigma_px, 3))

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
        edge = ellipse_radius(
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
