"""The green localisation motifs: one per class, looked up by class name in ``MOTIFS``.

Each motif draws where a protein of its class sits in the cells of a Scene and returns an
S x S float32 map peaking near 1. ``MOTIF_COMPARTMENTS`` names, per class, the compartment
of ``Scene.compartment_masks`` its motif draws into.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np

from hpa.core.labels import HPA2018
from hpa.data.synthetic.raster import (
    DRAW_SHIFT,
    blur,
    ellipse_radius,
    fixed_point,
    pixel_grid,
    ridges,
)
from hpa.data.synthetic.scene import COMPARTMENTS, Scene


def nucleoplasm(s: Scene) -> np.ndarray:
    texture = 0.8 + 0.2 * s.band_noise(s.px(2.0))
    return s.nucleus_mask * texture * (1.0 - 0.7 * np.minimum(s.nucleoli, 1.0))


def nuclear_membrane(s: Scene) -> np.ndarray:
    width = s.px(1.3, 0.8)
    ring = np.exp(-((s.nucleus_dist / width) ** 2))
    return ring * s.in_cell * (0.75 + 0.25 * s.band_noise(s.px(2.0)))


def nucleoli(s: Scene) -> np.ndarray:
    return np.minimum(s.nucleoli, 1.0) + 0.08 * s.nucleus_mask


def nucleoli_fibrillar_center(s: Scene) -> np.ndarray:
    per_nucleolus = s.rng.integers(2, 6, s.nucleoli_y.size)
    ys = np.repeat(s.nucleoli_y, per_nucleolus)
    xs = np.repeat(s.nucleoli_x, per_nucleolus)
    offsets = s.rng.normal(0.0, 0.7 * s.nucleolus_sigma, (2, ys.size))
    dots = s.spots(ys + offsets[0], xs + offsets[1], s.px(0.8), s.rng.uniform(0.7, 1.0, ys.size))
    return dots + 0.12 * np.minimum(s.nucleoli, 1.0)


def nuclear_speckles(s: Scene) -> np.ndarray:
    ys, xs = s.random_points(s.nucleus, s.count_for(s.nucleus, 55.0))
    speckles = s.spots(ys, xs, s.px(1.3), s.rng.uniform(0.5, 1.0, ys.size))
    return (speckles + 0.15 * s.nucleus_mask) * (1.0 - 0.8 * np.minimum(s.nucleoli, 1.0))


def nuclear_bodies(s: Scene) -> np.ndarray:
    ys, xs = s.points_in_nuclei(s.rng.integers(1, 4, s.cells.count), 0.7)
    return s.spots(ys, xs, s.px(1.7), 1.2) + 0.08 * s.nucleus_mask


def endoplasmic_reticulum(s: Scene) -> np.ndarray:
    return s.reticulum_stain * (0.85 + 0.15 * s.band_noise(s.px(3.0)))


def golgi_apparatus(s: Scene) -> np.ndarray:
    facing = s.rng.uniform(0.0, 2 * math.pi, s.cells.count)
    alignment = np.cos(s.nucleus_phi - s.per_pixel(facing))  # 1 on the chosen side
    crescent = np.clip((alignment - 0.35) / 0.65, 0.0, 1.0) ** 2
    depth = 0.5 * s.per_pixel(s.cells.nucleus_radius)
    band = np.exp(-(((s.nucleus_dist - 0.4 * depth) / (0.45 * depth)) ** 2))
    clumps = np.clip(0.6 + 0.6 * s.band_noise(s.px(1.2)), 0.0, 1.0)
    return crescent * band * clumps * s.cytoplasm_mask * 1.2


def peroxisomes(s: Scene) -> np.ndarray:
    ys, xs = s.random_points(s.cytoplasm, s.count_for(s.cytoplasm, 60.0))
    return s.spots(ys, xs, s.px(0.8), s.rng.uniform(0.5, 1.0, ys.size))


def endosomes(s: Scene) -> np.ndarray:
    ys, xs = s.random_points(s.cytoplasm, s.count_for(s.cytoplasm, 180.0))
    return s.spots(ys, xs, s.px(1.8), s.rng.uniform(0.4, 1.0, ys.size))


def lysosomes(s: Scene) -> np.ndarray:
    near = s.cytoplasm & (s.nucleus_dist < 0.45 * s.cells.typical_radius)
    ys, xs = s.random_points(near, s.count_for(near, 90.0))
    return s.spots(ys, xs, s.px(1.3), s.rng.uniform(0.5, 1.0, ys.size))


def intermediate_filaments(s: Scene) -> np.ndarray:
    fibres = s.radial_filaments((10, 16), (1.0, 2.0), 30.0, power=6).field
    return fibres * s.cytoplasm_mask * (0.55 + 0.45 * s.perinuclear_weight)


def actin_filaments(s: Scene) -> np.ndarray:
    direction = s.rng.uniform(0.0, math.pi, s.cells.count)
    offset = s.rng.uniform(0.0, 2 * math.pi, s.cells.count)
    across = s.dy * s.per_pixel(np.cos(direction)) - s.dx * s.per_pixel(np.sin(direction))
    period = max(5.0 * s.unit, 3.2)
    fibres = ridges(2 * math.pi * across / period + s.per_pixel(offset), power=4)
    broken = np.clip(0.3 + 0.7 * s.smooth_noise(grid=max(6, s.size // 16)), 0.0, 1.0)
    return fibres * broken * s.cell_mask


def focal_adhesion_sites(s: Scene) -> np.ndarray:
    canvas = s.canvas()
    cells = s.cells
    length = s.px(5.0, 2.0)
    thickness = max(1, round(1.2 * s.unit))
    for k in range(cells.count):
        directions = s.rng.uniform(0.0, 2 * math.pi, int(s.rng.integers(7, 14)))
        reach = 0.82 * ellipse_radius(
            directions, cells.semi_major[k], cells.semi_minor[k], cells.orientation[k]
        )
        ys = cells.centre_y[k] + reach * np.sin(directions)
        xs = cells.centre_x[k] + reach * np.cos(directions)
        keep = s.owned_by(ys, xs, k)
        for direction, y, x in zip(directions[keep], ys[keep], xs[keep], strict=True):
            start = fixed_point([x, y])
            end = fixed_point([x + length * math.cos(direction), y + length * math.sin(direction)])
            cv2.line(canvas, start.tolist(), end.tolist(), 1.0, thickness, cv2.LINE_8, DRAW_SHIFT)
    return blur(canvas, s.px(0.6)) * s.cell_mask


def microtubules(s: Scene) -> np.ndarray:
    return s.microtubule_stain * (0.8 + 0.2 * s.band_noise(s.px(3.0)))


def microtubule_ends(s: Scene) -> np.ndarray:
    fil, cells = s.microtubules, s.cells
    all_ys, all_xs = [], []
    for k in range(cells.count):
        base = (2 * math.pi * np.arange(fil.counts[k]) - fil.phases[k]) / fil.counts[k]
        directions = base
        for _ in range(3):  # the wave shifts each filament's angle by an amount set by its radius
            radius = 0.88 * ellipse_radius(
                directions, cells.semi_major[k], cells.semi_minor[k], cells.orientation[k]
            )
            wave = fil.wave_amplitudes[k] * np.sin(
                fil.wave_frequencies[k] * radius + fil.wave_phases[k]
            )
            directions = base - wave / fil.counts[k]
        radius = 0.88 * ellipse_radius(
            directions, cells.semi_major[k], cells.semi_minor[k], cells.orientation[k]
        )
        ys = cells.centre_y[k] + radius * np.sin(directions)
        xs = cells.centre_x[k] + radius * np.cos(directions)
        keep = s.owned_by(ys, xs, k) & (s.rng.random(ys.size) < 0.6)
        all_ys.append(ys[keep])
        all_xs.append(xs[keep])
    ys, xs = np.concatenate(all_ys), np.concatenate(all_xs)
    return s.spots(ys, xs, s.px(1.0), s.rng.uniform(0.7, 1.0, ys.size)) + 0.05 * s.cytoplasm_mask


def cytokinetic_bridge(s: Scene) -> np.ndarray:
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
    start = fixed_point([start_x[first], start_y[first]])
    end = fixed_point([end_x[second], end_y[second]])
    canvas = s.canvas()
    cv2.line(
        canvas, start.tolist(), end.tolist(), 1.3, max(1, round(s.unit)), cv2.LINE_8, DRAW_SHIFT
    )
    bridge = blur(canvas, s.px(0.6))
    mid_y = np.array([(start_y[first] + end_y[second]) / 2])
    mid_x = np.array([(start_x[first] + end_x[second]) / 2])
    return bridge + s.spots(mid_y, mid_x, s.px(1.8), 1.3)


def mitotic_spindle(s: Scene) -> np.ndarray:
    cells = s.cells
    k = int(s.rng.integers(cells.count))
    axis = s.rng.uniform(0.0, math.pi)
    half_length = 1.1 * float(cells.nucleus_radius[k])
    ys, xs = pixel_grid(s.size)
    dx, dy = xs - cells.nucleus_x[k], ys - cells.nucleus_y[k]
    along = dx * math.cos(axis) + dy * math.sin(axis)
    across = dy * math.cos(axis) - dx * math.sin(axis)
    closeness = np.clip(1.0 - np.abs(along) / half_length, 0.0, 1.0)  # 1 mid-spindle, 0 at poles
    half_width = 0.5 * half_length * closeness + 0.5
    relative = across / half_width
    fibres = 0.5 + 0.5 * ridges(2 * math.pi * 2.5 * relative, power=2)
    body = np.exp(-(relative**4)) * np.sqrt(closeness) * fibres
    pole_y = cells.nucleus_y[k] + half_length * math.sin(axis) * np.array([1.0, -1.0])
    pole_x = cells.nucleus_x[k] + half_length * math.cos(axis) * np.array([1.0, -1.0])
    return body + s.spots(pole_y, pole_x, s.px(1.4), 1.0)


def microtubule_organizing_center(s: Scene) -> np.ndarray:
    directions = s.rng.uniform(0.0, 2 * math.pi, (s.cells.count, 1))
    ys, xs = s.beside_nuclei(directions, s.px(3.0))
    return (
        s.spots(ys, xs, s.px(1.9), 1.3) + s.spots(ys, xs, s.px(4.5), 0.25) + 0.06 * s.cytoplasm_mask
    )


def centrosome(s: Scene) -> np.ndarray:
    directions = s.rng.uniform(0.0, 2 * math.pi, (s.cells.count, 1))
    ys, xs = s.beside_nuclei(directions, s.px(3.0))
    split = s.rng.uniform(0.0, 2 * math.pi, ys.size)
    separation = s.px(3.5, 1.5)
    pair_ys = np.concatenate([ys, ys + separation * np.sin(split)])
    pair_xs = np.concatenate([xs, xs + separation * np.cos(split)])
    return s.spots(pair_ys, pair_xs, s.px(1.0), 1.0)


def lipid_droplets(s: Scene) -> np.ndarray:
    count = int(s.rng.integers(3, 9)) * s.cells.count
    ys, xs = s.random_points(s.cytoplasm, count)
    radii = np.maximum(s.rng.uniform(2.5, 4.5, ys.size) * s.unit, 2.0)
    canvas = s.canvas()
    thickness = max(1, round(0.8 * s.unit))
    for y, x, radius in zip(ys, xs, radii, strict=True):
        centre = fixed_point([x, y]).tolist()
        cv2.circle(canvas, centre, int(fixed_point(radius)), 1.0, thickness, cv2.LINE_8, DRAW_SHIFT)
    return blur(canvas, s.px(0.6))


def plasma_membrane(s: Scene) -> np.ndarray:
    return blur(s.outline, s.px(0.7)) * (0.75 + 0.25 * s.band_noise(s.px(2.0)))


def cell_junctions(s: Scene) -> np.ndarray:
    return blur(s.junctions, s.px(0.7)) * 1.2


def mitochondria(s: Scene) -> np.ndarray:
    ys, xs = s.random_points(s.cytoplasm, s.count_for(s.cytoplasm, 45.0))
    lengths = s.rng.uniform(3.0, 7.0, ys.size) * s.unit
    heading = s.rng.uniform(0.0, 2 * math.pi, ys.size)
    bend = heading + s.rng.uniform(-0.9, 0.9, ys.size)
    middle_x, middle_y = xs + 0.5 * lengths * np.cos(heading), ys + 0.5 * lengths * np.sin(heading)
    end_x, end_y = middle_x + 0.5 * lengths * np.cos(bend), middle_y + 0.5 * lengths * np.sin(bend)
    worms = fixed_point(
        np.stack([np.stack([xs, middle_x, end_x], 1), np.stack([ys, middle_y, end_y], 1)], 2)
    )
    canvas = s.canvas()
    thickness = max(1, round(s.unit))
    cv2.polylines(canvas, list(worms), False, 0.9, thickness, cv2.LINE_8, DRAW_SHIFT)
    return blur(canvas, s.px(0.6)) * s.cytoplasm_mask


def aggresome(s: Scene) -> np.ndarray:
    cells = s.cells
    directions = s.rng.uniform(0.0, 2 * math.pi, (cells.count, 1))
    ys, xs = s.beside_nuclei(directions, 0.35 * cells.nucleus_radius[:, None])
    chosen = s.rng.random(cells.count) < 0.7
    chosen[s.rng.integers(cells.count)] = True
    sigma = 0.22 * float(cells.nucleus_radius.mean())
    return s.spots(ys[chosen], xs[chosen], sigma, 1.4) + 0.08 * s.cytoplasm_mask


def cytosol(s: Scene) -> np.ndarray:
    return s.cytoplasm_mask * (0.6 + 0.12 * s.band_noise(s.px(3.0)))


def cytoplasmic_bodies(s: Scene) -> np.ndarray:
    count = int(s.rng.integers(1, 4)) * s.cells.count
    ys, xs = s.random_points(s.cytoplasm, count)
    radii = np.maximum(s.rng.uniform(2.5, 4.0, ys.size) * s.unit, 1.2)
    canvas = s.canvas()
    for y, x, radius in zip(ys, xs, radii, strict=True):
        centre = fixed_point([x, y]).tolist()
        cv2.circle(canvas, centre, int(fixed_point(radius)), 1.0, -1, cv2.LINE_8, DRAW_SHIFT)
    return blur(canvas, s.px(0.9))


def rods_and_rings(s: Scene) -> np.ndarray:
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
            centre = fixed_point([x, y]).tolist()
            cv2.circle(
                canvas,
                centre,
                int(fixed_point(ring_radius)),
                1.0,
                thickness,
                cv2.LINE_8,
                DRAW_SHIFT,
            )
        else:
            half = 0.5 * rod_length * np.array([math.cos(heading), math.sin(heading)])
            start = fixed_point(np.array([x, y]) - half).tolist()
            end = fixed_point(np.array([x, y]) + half).tolist()
            cv2.line(canvas, start, end, 1.0, thickness, cv2.LINE_8, DRAW_SHIFT)
    return blur(canvas, s.px(0.6)) * 1.5


Motif = Callable[[Scene], np.ndarray]

MOTIFS: dict[str, Motif] = {
    "Nucleoplasm": nucleoplasm,
    "Nuclear membrane": nuclear_membrane,
    "Nucleoli": nucleoli,
    "Nucleoli fibrillar center": nucleoli_fibrillar_center,
    "Nuclear speckles": nuclear_speckles,
    "Nuclear bodies": nuclear_bodies,
    "Endoplasmic reticulum": endoplasmic_reticulum,
    "Golgi apparatus": golgi_apparatus,
    "Peroxisomes": peroxisomes,
    "Endosomes": endosomes,
    "Lysosomes": lysosomes,
    "Intermediate filaments": intermediate_filaments,
    "Actin filaments": actin_filaments,
    "Focal adhesion sites": focal_adhesion_sites,
    "Microtubules": microtubules,
    "Microtubule ends": microtubule_ends,
    "Cytokinetic bridge": cytokinetic_bridge,
    "Mitotic spindle": mitotic_spindle,
    "Microtubule organizing center": microtubule_organizing_center,
    "Centrosome": centrosome,
    "Lipid droplets": lipid_droplets,
    "Plasma membrane": plasma_membrane,
    "Cell junctions": cell_junctions,
    "Mitochondria": mitochondria,
    "Aggresome": aggresome,
    "Cytosol": cytosol,
    "Cytoplasmic bodies": cytoplasmic_bodies,
    "Rods & rings": rods_and_rings,
}
"""The motif of each class, by class name (the classes of hpa.core.labels.HPA2018)."""

MOTIF_COMPARTMENTS: dict[str, str] = {
    "Nucleoplasm": "nucleus",
    "Nuclear membrane": "nuclear_membrane",
    "Nucleoli": "nucleoli",
    "Nucleoli fibrillar center": "nucleoli",
    "Nuclear speckles": "nucleus",
    "Nuclear bodies": "nucleus",
    "Endoplasmic reticulum": "cytoplasm",
    "Golgi apparatus": "cytoplasm",
    "Peroxisomes": "cytoplasm",
    "Endosomes": "cytoplasm",
    "Lysosomes": "cytoplasm",
    "Intermediate filaments": "cytoplasm",
    "Actin filaments": "cell",
    "Focal adhesion sites": "cytoplasm",
    "Microtubules": "cytoplasm",
    "Microtubule ends": "cytoplasm",
    "Cytokinetic bridge": "cytoplasm",
    "Mitotic spindle": "nucleus",
    "Microtubule organizing center": "cytoplasm",
    "Centrosome": "cytoplasm",
    "Lipid droplets": "cytoplasm",
    "Plasma membrane": "cell_membrane",
    "Cell junctions": "cell_membrane",
    "Mitochondria": "cytoplasm",
    "Aggresome": "cytoplasm",
    "Cytosol": "cytoplasm",
    "Cytoplasmic bodies": "cytoplasm",
    "Rods & rings": "cytoplasm",
}
"""The compartment (a name of scene.COMPARTMENTS) each class's motif draws into, by class name."""


def _check_tables() -> None:
    for table_name, table in (("MOTIFS", MOTIFS), ("MOTIF_COMPARTMENTS", MOTIF_COMPARTMENTS)):
        missing = [name for name in HPA2018.class_names if name not in table]
        unknown = [name for name in table if name not in HPA2018.class_names]
        if missing or unknown:
            raise RuntimeError(
                f"{table_name} must have one entry per class of hpa.core.labels.HPA2018: "
                f"missing {missing}, unknown {unknown}"
            )
    bad = {name: value for name, value in MOTIF_COMPARTMENTS.items() if value not in COMPARTMENTS}
    if bad:
        raise RuntimeError(f"MOTIF_COMPARTMENTS names unknown compartments {bad}; see COMPARTMENTS")


_check_tables()
