"""Synthetic images for the 2021 single-cell task (HPA2021), with the truth of every cell.

Labels are given per image but the cells of one image differ: an image draws 1-3 localisation
classes, each cell shows a non-empty subset of them or is Negative (18, no green pattern), and
the image label is the union over its cells (the full rule: ``assignment``). The cells, the
red, blue and yellow stains and most green motifs are the 2018 generator's
(hpa.data.synthetic); a per-cell label image and a per-cell csv are written beside the Kaggle
files, apart from what a model reads (layout: ``writer``).

Modules: ``assignment`` (which classes each cell shows), ``motifs`` (the green of each 2021
class, drawn into chosen cells), ``render`` (one image and its truth), ``settings`` (what a set
is drawn from, its manifest), ``writer`` (a set on disk: generate_cell_set, ensure_cell_set).
"""

from hpa.data.synthetic.cells.assignment import (
    IMAGE_CLASS_WEIGHTS,
    NEGATIVE,
    assign_cell_classes,
    draw_image_classes,
    image_label,
)
from hpa.data.synthetic.cells.motifs import CELL_MOTIFS
from hpa.data.synthetic.cells.render import CellImage, render_cell_image
from hpa.data.synthetic.cells.settings import (
    DEFAULT_NEGATIVE_FRACTION,
    DEFAULT_SIZES,
    FORMAT_VERSION,
    CellSetSettings,
)
from hpa.data.synthetic.cells.writer import (
    CELLS_CSV,
    MANIFEST_NAME,
    TRUTH_DIR,
    ensure_cell_set,
    generate_cell_set,
    is_complete,
    read_manifest,
)

__all__ = [
    "CELLS_CSV",
    "CELL_MOTIFS",
    "DEFAULT_NEGATIVE_FRACTION",
    "DEFAULT_SIZES",
    "FORMAT_VERSION",
    "IMAGE_CLASS_WEIGHTS",
    "MANIFEST_NAME",
    "NEGATIVE",
    "TRUTH_DIR",
    "CellImage",
    "CellSetSettings",
    "assign_cell_classes",
    "draw_image_classes",
    "ensure_cell_set",
    "generate_cell_set",
    "image_label",
    "is_complete",
    "read_manifest",
    "render_cell_image",
]
