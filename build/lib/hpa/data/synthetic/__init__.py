"""Procedural HPA-like images written in the Kaggle layout, read back like real data.

Each image is a small colony of cells: nuclei in blue, radial microtubules in red, a reticular
endoplasmic reticulum in yellow, and in green the sum of the localisation motifs of its labels.
Labels are multilabel with the class frequencies and the labels-per-image distribution of the
real Kaggle train.csv.

Modules: ``labels`` (label rows), ``raster`` (pixel primitives), ``scene`` (the cells and their
compartments), ``motifs`` (one green motif per class, by class name), ``photograph`` (the stains
and the camera: render_sample), ``writer`` (a set on disk), ``__main__`` (the command line
``python -m hpa.data.synthetic ROOT --n N --size S --seed K [--n-test M]``).
"""

from hpa.data.synthetic.labels import sample_labels
from hpa.data.synthetic.motifs import MOTIF_COMPARTMENTS, MOTIFS
from hpa.data.synthetic.photograph import render_sample, render_sample_with_compartments
from hpa.data.synthetic.scene import COMPARTMENTS, MIN_IMAGE_SIZE
from hpa.data.synthetic.writer import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    ensure_dataset,
    ensure_synthetic_root,
    generate_dataset,
    is_complete,
)

__all__ = [
    "COMPARTMENTS",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "MIN_IMAGE_SIZE",
    "MOTIFS",
    "MOTIF_COMPARTMENTS",
    "ensure_dataset",
    "ensure_synthetic_root",
    "generate_dataset",
    "is_complete",
    "render_sample",
    "render_sample_with_compartments",
    "sample_labels",
]
