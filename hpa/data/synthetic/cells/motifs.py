"""The green patterns of the 2021 classes, drawn into the chosen cells of a Scene only.

Most 2021 classes carry a 2018 class name, and reuse that 2018 motif (hpa.data.synthetic.motifs)
drawn over the whole scene and then kept only over the pixels of the cells that show the class.
Three need their own drawing:

- Vesicles and punctate cytosolic patterns: the 2018 Endosomes motif (cytoplasmic puncta);
- Mitotic spindle and Aggresome: their 2018 motifs put the pattern into one random cell or a
  random 70% of cells; here every cell that shows the class gets one;
- Negative: no pattern; a Negative cell keeps only the faint diffuse green every cell has.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from hpa.core.labels import HPA2021
from hpa.data.synthetic.motifs import MOTIFS
from hpa.data.synthetic.raster import ridges
from hpa.data.synthetic.scene import Scene

DIFFUSE_GREEN = 0.02
"""Faint green over every cell (as the 2018 images have): what a Negative cell looks like."""


def mitotic_spindle(s: Scene) -> np.ndarray:
    """A spindle across every nucleus: fibres converging on two poles, one spot at each pole."""
    cells = s.cells
    axes = s.rng.uniform(0.0, math.pi, cells.count)
    half_lengths = 1.1 * cells.nucleus_radius
    cos_axis, sin_axis = s.per_pixel(np.cos(axes)), s.per_pixel(np.sin(axes))
    along = s.nucleus_dx * cos_axis + s.nucleus_dy * sin_axis
    across = s.nucleus_dy * cos_axis - s.nucleus_dx * sin_axis
    half_length = s.per_pixel(half_lengths)
    closeness = np.clip(1.0 - np.abs(along) / half_length, 0.0, 1.0)  # 1 mid-spindle, 0 at poles
    relative = across / (0.5 * half_length * closeness + 0.5)
    fibres = 0.5 + 0.5 * ridges(2 * math.pi * 2.5 * relative, power=2)
    body = np.exp(-(relative**4)) * np.sqrt(closeness) * fibres
    pole_ys = np.concatenate(
        [
            cells.nucleus_y + half_lengths * np.sin(axes),
            cells.nucleus_y - half_lengths * np.sin(axes),
        ]
    )
    pole_xs = np.concatenate(
        [
            cells.nucleus_x + half_lengths * np.cos(axes),
            cells.nucleus_x - half_lengths * np.cos(axes),
        ]
    )
    return body + s.spots(pole_ys, pole_xs, s.px(1.4), 1.0)


def aggresome(s: Scene) -> np.ndarray:
    """One bright perinuclear blob beside every nucleus, over a faint cytoplasmic haze."""
    cells = s.cells
    directions = s.rng.uniform(0.0, 2 * math.pi, (cells.count, 1))
    ys, xs = s.beside_nuclei(directions, 0.35 * cells.nucleus_radius[:, None])
    sigma = 0.22 * float(cells.nucleus_radius.mean())
    return s.spots(ys, xs, sigma, 1.4) + 0.08 * s.cytoplasm_mask


Motif = Callable[[Scene], np.ndarray]

CELL_MOTIFS: dict[str, Motif] = {
    **{name: MOTIFS[name] for name in HPA2021.class_names if name in MOTIFS},
    "Mitotic spindle": mitotic_spindle,
    "Aggresome": aggresome,
    "Vesicles and punctate cytosolic patterns": MOTIFS["Endosomes"],
}
"""The motif of each 2021 class but Negative, by class name: an S x S map over all cells."""

_missing = set(HPA2021.class_names) - set(CELL_MOTIFS) - {"Negative"}
if _missing:
    raise RuntimeError(f"CELL_MOTIFS lacks a motif for the 2021 classes {sorted(_missing)}")


def green_signal(s: Scene, cell_classes: Sequence[Sequence[int]]) -> np.ndarray:
    """Green of a scene whose cell k shows the class ids ``cell_classes[k]``.

    Each class's motif is drawn once over the scene and kept only where the pixel's owner
    cell shows the class, with a brightness drawn per cell: cells with the same label still
    differ in intensity, as in real images.
    """
    if len(cell_classes) != s.cells.count:
        raise ValueError(f"{len(cell_classes)} cell labels for a scene of {s.cells.count} cells")
    total = DIFFUSE_GREEN * s.cell_mask
    shown_ids = sorted({class_id for classes in cell_classes for class_id in classes})
    for class_id in shown_ids:
        name = HPA2021.class_names[class_id]
        if name == "Negative":
            continue
        showing = np.array([class_id in classes for classes in cell_classes], dtype=np.float32)
        brightness = showing * s.rng.uniform(0.6, 1.0, s.cells.count).astype(np.float32)
        total = total + s.per_pixel(brightness) * CELL_MOTIFS[name](s)
    return np.clip(total, 0.0, 1.0)
