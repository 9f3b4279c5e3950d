"""The green-channel pattern of each of the 28 classes (``PATTERNS[class_id]``), drawn in the
compartments of a Scene: a function (scene, cells) -> field of about 0..1, where ``cells`` masks
the cells that show it.

Some classes are alike on purpose: nucleoli / fibrillar centres / nuclear bodies / speckles
(nuclear dots of different size and number), peroxisomes / endosomes / lysosomes (cytoplasmic
dots, spread differently), MTOC / centrosome / aggresome (beside the nucleus), plasma membrane /
cell junctions, intermediate filaments / microtubules / actin / mitochondria, focal adhesions /
microtubule ends (at the cell's rim).
"""

from __future__ import annotations

import math

import numpy as np

from benchmarks.quality import structures as st
from benchmarks.quality.cells import Scene, smooth_noise
from benchmarks.quality.drawing import blur, dots, rings


def _spots(s: Scene, cells, weight, per_cell, sigma: float, spread: float = 0.0):
    """Dots drawn with probability ``weight`` (a field) in the chosen cells, ``per_cell`` =
    (low, high) dots per cell; brightness varies by up to ``spread`` below 1."""
    points = s.points(weight * st.where(s, cells, s.in_cell), st.count(s, cells, *per_cell))
    return dots(s.size, points, sigma * s.unit, 1.0 - spread * s.rng.random(len(points)))


def _textured(s: Scene, cells, compartment, sigma: float) -> np.ndarray:
    texture = 0.75 + 0.25 * np.tanh(smooth_noise(s.rng, s.size, sigma * s.unit))
    return st.where(s, cells, compartment) * texture


def _nucleolus_centres(s: Scene, cells) -> np.ndarray:
    return np.concatenate([points for index, points in enumerate(s.nucleoli) if cells[index]])


def _nucleoli(s: Scene, cells) -> np.ndarray:
    return dots(s.size, _nucleolus_centres(s, cells), 2.8 * s.unit)


def _nucleoplasm(s: Scene, cells) -> np.ndarray:
    """The whole nucleus, textured, darker in the nucleoli."""
    return _textured(s, cells, s.nucleus, 3) * (1 - 0.8 * np.minimum(_nucleoli(s, cells), 1))


def _lipid_droplets(s: Scene, cells) -> np.ndarray:
    centres = s.points(st.where(s, cells, s.cytoplasm), st.count(s, cells, 4, 12))
    return rings(s.size, centres, s.rng.uniform(2, 4, len(centres)) * s.unit, 0.5 * s.unit)


def _band(distance: np.ndarray, width: float) -> np.ndarray:
    return np.exp(-((distance / width) ** 2))


def _perinuclear(s: Scene, scale: float) -> np.ndarray:
    return np.exp(-np.maximum(s.nucleus_distance, 0) / (scale * s.unit)) * s.cytoplasm


def _junctions(s: Scene, cells) -> np.ndarray:
    """Where cells touch, and each chosen cell's rim facing its nearest neighbour."""
    facing = np.zeros_like(s.junction)
    centres = np.array([[cell.x, cell.y] for cell in s.cells])
    rim = s.in_cell & (s.edge_distance < 2.5 * s.unit)
    yy, xx = np.nonzero(rim)
    for index in np.flatnonzero(cells) if len(centres) > 1 else []:
        others = np.delete(centres, index, axis=0)
        toward = others[np.argmin(np.linalg.norm(others - centres[index], axis=1))] - centres[index]
        out = np.stack([xx, yy], axis=1) - centres[index]
        cosine = (
            out @ toward / np.maximum(np.linalg.norm(out, axis=1) * np.linalg.norm(toward), 1e-6)
        )
        keep = (s.owner[yy, xx] == index) & (cosine > math.cos(0.5))
        facing[yy[keep], xx[keep]] = True
    return 2 * blur(st.where(s, cells, s.junction | facing), s.unit)


PATTERNS = (
    _nucleoplasm,  # 0
    lambda s, c: st.where(s, c, s.in_cell) * _band(s.nucleus_distance, 1.3 * s.unit),  # 1
    _nucleoli,  # 2 nucleoli
    lambda s, c: st.clusters(s, _nucleolus_centres(s, c), 5, 1.6, 0.9),  # 3 fibrillar centre
    lambda s, c: _spots(s, c, s.nucleus.astype(np.float32), (10, 25), 1.6, 0.5),  # 4 speckles
    lambda s, c: _spots(s, c, s.nucleus.astype(np.float32), (2, 6), 1.3),  # 5 nuclear bodies
    lambda s, c: st.where(s, c, s.cytoplasm) * s.reticulum * _perinuclear(s, 14),  # 6 ER
    lambda s, c: st.clusters(s, st.beside_nucleus(s, c, 4), 9, 3, 1.5),  # 7 Golgi apparatus
    lambda s, c: _spots(s, c, s.cytoplasm.astype(np.float32), (25, 60), 0.9),  # 8 peroxisomes
    lambda s, c: _spots(s, c, s.cytoplasm * s.rho**2, (15, 35), 1.4, 0.4),  # 9 endosomes
    lambda s, c: _spots(s, c, _perinuclear(s, 6), (10, 25), 1.6, 0.4),  # 10 lysosomes
    lambda s, c: st.filaments(s, c, (6, 12), steps=10, turn=0.35),  # 11 intermediate filaments
    st.actin,  # 12 actin filaments
    lambda s, c: st.radial(s, c, (6, 14), 0.8, 0.95, dash=6, width=1.5),  # 13 focal adhesions
    lambda s, c: st.radial(s, c, (15, 25), 0.35, 0.97),  # 14 microtubules
    lambda s, c: _spots(s, c, (s.cytoplasm & (s.rho > 0.85)) * 1.0, (10, 20), 1.0),  # 15 ends
    st.cytokinetic_bridge,  # 16
    st.mitotic_spindle,  # 17
    lambda s, c: (
        dots(s.size, st.beside_nucleus(s, c, 3), 2 * s.unit) + 0.15 * st.where(s, c, s.cytoplasm)
    ),  # 18 microtubule organizing center
    lambda s, c: dots(s.size, st.beside_nucleus(s, c, 3, pair=3), 1.1 * s.unit),  # 19 centrosome
    _lipid_droplets,  # 20
    lambda s, c: st.where(s, c, s.in_cell) * _band(s.edge_distance, 1.3 * s.unit),  # 21 membrane
    _junctions,  # 22 cell junctions
    lambda s, c: st.filaments(s, c, (20, 40), steps=2, turn=0.5, width=1.5),  # 23 mitochondria
    lambda s, c: dots(s.size, st.beside_nucleus(s, c, 5), 4 * s.unit),  # 24 aggresome
    lambda s, c: 0.8 * _textured(s, c, s.cytoplasm, 4),  # 25 cytosol
    lambda s, c: _spots(s, c, s.cytoplasm.astype(np.float32), (1, 3), 2.5),  # 26 cyto. bodies
    st.rods_and_rings,  # 27 rods & rings
)
