"""Which 2021 classes each cell of an image shows, and the image label they add up to.

The rule (the cells of one image differ, as in the 2021 single-cell task):

1. The image draws 1, 2 or 3 *image classes* (probabilities ``IMAGE_CLASS_COUNT_PROBABILITIES``)
   from the 18 localisation classes 0..17, without replacement, with the weights of
   ``IMAGE_CLASS_WEIGHTS`` (Nucleoplasm and Cytosol frequent, Mitotic spindle rare).
2. Each cell is Negative (class 18 alone, no green pattern) with probability
   ``negative_fraction``. Otherwise it shows each image class with probability
   ``SHOW_PROBABILITY``, and one image class picked uniformly if that left it with none.
3. Repairs, so the image classes are the image label: when every cell came out Negative one
   random cell shows one image class instead; then each image class no cell shows is added to
   a random non-Negative cell.
4. The image label is the union of its cells' classes: every image class, plus 18 Negative
   exactly when at least one cell is Negative.

So every image label is shown by at least one cell, and every cell's classes are a non-empty
subset of its image's classes, or exactly (18,) for a Negative cell.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hpa.core.labels import HPA2021

NEGATIVE = HPA2021.class_names.index("Negative")
"""Class id of Negative (18): a cell with no green pattern of its own."""

LOCALISATION_CLASSES: tuple[int, ...] = tuple(i for i in HPA2021.class_ids if i != NEGATIVE)

IMAGE_CLASS_WEIGHTS: dict[str, float] = {
    "Nucleoplasm": 40.0,
    "Nuclear membrane": 5.0,
    "Nucleoli": 11.0,
    "Nucleoli fibrillar center": 6.0,
    "Nuclear speckles": 7.0,
    "Nuclear bodies": 10.0,
    "Endoplasmic reticulum": 4.0,
    "Golgi apparatus": 9.0,
    "Intermediate filaments": 5.0,
    "Actin filaments": 4.0,
    "Microtubules": 3.0,
    "Mitotic spindle": 0.5,
    "Centrosome": 7.0,
    "Plasma membrane": 15.0,
    "Mitochondria": 12.0,
    "Aggresome": 2.0,
    "Cytosol": 29.0,
    "Vesicles and punctate cytosolic patterns": 9.0,
}
"""Relative frequency of each localisation class among image classes: rounded, shaped like the
2021 train.csv (frequent nuclear and cytosolic classes, rare spindles and aggresomes), not its
exact counts. Negative is not drawn here: it comes from Negative cells."""

IMAGE_CLASS_COUNT_PROBABILITIES: dict[int, float] = {1: 0.55, 2: 0.33, 3: 0.12}
"""How many image classes an image draws."""

SHOW_PROBABILITY = 0.6
"""Chance that a non-Negative cell shows each one of its image's classes."""


def _class_probabilities() -> np.ndarray:
    weights = np.array([IMAGE_CLASS_WEIGHTS[HPA2021.class_names[i]] for i in LOCALISATION_CLASSES])
    return weights / weights.sum()


def draw_image_classes(rng: np.random.Generator) -> tuple[int, ...]:
    """The 1-3 localisation classes of one image, ascending."""
    counts = list(IMAGE_CLASS_COUNT_PROBABILITIES)
    count = int(rng.choice(counts, p=list(IMAGE_CLASS_COUNT_PROBABILITIES.values())))
    picks = rng.choice(LOCALISATION_CLASSES, size=count, replace=False, p=_class_probabilities())
    return tuple(sorted(int(class_id) for class_id in picks))


def assign_cell_classes(
    image_classes: Sequence[int],
    num_cells: int,
    negative_fraction: float,
    rng: np.random.Generator,
) -> list[tuple[int, ...]]:
    """The classes each of ``num_cells`` cells shows, ascending, by the rule of this module."""
    if num_cells < 1 or not image_classes or NEGATIVE in image_classes:
        raise ValueError(
            f"need at least one cell and 1+ localisation classes, got {num_cells} cells and "
            f"image classes {tuple(image_classes)}"
        )
    image_classes = sorted(image_classes)
    negative = rng.random(num_cells) < negative_fraction
    shows = rng.random((num_cells, len(image_classes))) < SHOW_PROBABILITY
    for cell in np.flatnonzero(~negative & ~shows.any(axis=1)):
        shows[cell, rng.integers(len(image_classes))] = True
    if negative.all():
        cell = int(rng.integers(num_cells))
        negative[cell] = False
        shows[cell, rng.integers(len(image_classes))] = True
    shows[negative] = False
    showing_cells = np.flatnonzero(~negative)
    for position in np.flatnonzero(~shows.any(axis=0)):
        shows[rng.choice(showing_cells), position] = True
    return [
        (NEGATIVE,) if negative[cell] else tuple(np.asarray(image_classes)[shows[cell]].tolist())
        for cell in range(num_cells)
    ]


def image_label(cell_classes: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """The image's label: the union of its cells' classes, ascending."""
    return tuple(sorted({int(class_id) for classes in cell_classes for class_id in classes}))


def format_label(class_ids: Sequence[int]) -> str:
    """Class ids as the 2021 csvs spell them: ``"0|16"``."""
    return HPA2021.separator.join(str(class_id) for class_id in sorted(set(class_ids)))
