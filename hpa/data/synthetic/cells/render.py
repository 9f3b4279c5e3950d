"""One synthetic 2021 image: its four stains, its cell label image, and each cell's classes.

The cells come from the 2018 generator's Scene (a colony of touching cells, some cut by the
image border). Red (microtubules) fills each cell body and yellow (endoplasmic reticulum)
surrounds each nucleus, both dimmed along the edges where two cells touch, and blue marks the
nuclei, which lie well inside their cells: a watershed seeded by the blue nuclei and grown over
red + yellow follows the cells. Green is per cell (cells.motifs.green_signal).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hpa.core.labels import CHANNELS
from hpa.data.synthetic.cells.assignment import assign_cell_classes, draw_image_classes, image_label
from hpa.data.synthetic.cells.motifs import green_signal
from hpa.data.synthetic.photograph import blue_signal, photograph
from hpa.data.synthetic.raster import blur
from hpa.data.synthetic.scene import Scene

JUNCTION_DIMMING = 0.8
"""How much darker red and yellow are on the edge between two touching cells (0: not at all)."""


@dataclass(frozen=True)
class CellImage:
    """One rendered image and its truth.

    ``channels``: uint8 (4, S, S) in CHANNELS order (RGBY); ``cell_labels``: uint16 (S, S), 0 for
    background and k + 1 on the pixels of cell k; ``cell_classes[k]``: the class ids cell k
    shows, ascending; ``label``: the image label, the union of the cells' classes.
    """

    channels: np.ndarray
    cell_labels: np.ndarray
    cell_classes: list[tuple[int, ...]]
    label: tuple[int, ...]

    @property
    def size(self) -> int:
        return self.cell_labels.shape[0]


def render_cell_image(size: int, negative_fraction: float, rng: np.random.Generator) -> CellImage:
    """Draw the cells, the classes they show (cells.assignment) and photograph the stains."""
    scene = Scene(size, rng)
    cell_classes = assign_cell_classes(
        draw_image_classes(rng), scene.cells.count, negative_fraction, rng
    )
    junction_gap = 1.0 - JUNCTION_DIMMING * np.minimum(blur(scene.junctions, scene.px(0.7)), 1.0)
    signals = {  # in this order: green, blue and photograph draw from rng
        "red": scene.microtubule_stain * junction_gap,
        "green": green_signal(scene, cell_classes),
        "blue": blue_signal(scene),
        "yellow": scene.reticulum_stain * junction_gap,
    }
    channels = photograph(np.stack([signals[color] for color in CHANNELS]), scene)
    cell_labels = np.where(scene.in_cell, scene.owner + 1, 0).astype(np.uint16)
    return CellImage(channels, cell_labels, cell_classes, image_label(cell_classes))
