"""The 28 HPA location classes and the Kaggle ``Target`` string format, in one place.

A ``Target`` is a space-separated list of class ids 0..27 (``"0 25"``); a multi-hot vector is
a length-28 uint8 array with a 1 at each class id.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

CHANNELS: tuple[str, ...] = ("red", "green", "blue", "yellow")
"""Stain of each input channel, in the order they are stacked (RGBY)."""

CLASS_NAMES: tuple[str, ...] = (
    "Nucleoplasm",
    "Nuclear membrane",
    "Nucleoli",
    "Nucleoli fibrillar center",
    "Nuclear speckles",
    "Nuclear bodies",
    "Endoplasmic reticulum",
    "Golgi apparatus",
    "Peroxisomes",
    "Endosomes",
    "Lysosomes",
    "Intermediate filaments",
    "Actin filaments",
    "Focal adhesion sites",
    "Microtubules",
    "Microtubule ends",
    "Cytokinetic bridge",
    "Mitotic spindle",
    "Microtubule organizing center",
    "Centrosome",
    "Lipid droplets",
    "Plasma membrane",
    "Cell junctions",
    "Mitochondria",
    "Aggresome",
    "Cytosol",
    "Cytoplasmic bodies",
    "Rods & rings",
)
NUM_CLASSES = len(CLASS_NAMES)

# Facts of the real Kaggle 2018 train.csv (31,072 images, 50,782 labels). The package never reads
# that file; the synthetic generator and the default sampler settings use these numbers.
NUM_KAGGLE_TRAIN_IMAGES = 31_072
KAGGLE_CLASS_COUNTS: tuple[int, ...] = (
    12885, 1254, 3621, 1561, 1858, 2513, 1008, 2822, 53, 45,
    28, 1093, 688, 537, 1066, 21, 530, 210, 902, 1482,
    172, 3777, 802, 2965, 322, 8228, 328, 11,
)  # fmt: skip
KAGGLE_LABELS_PER_IMAGE: dict[int, int] = {1: 15126, 2: 12485, 3: 3160, 4: 299, 5: 2}

SEED_MINORITY_CLASSES: tuple[int, ...] = (8, 9, 10, 15, 17, 20, 27)
"""The seven minority classes of the seed report (Peroxisomes, Endosomes, Lysosomes, Microtubule
ends, Mitotic spindle, Lipid droplets, Rods & rings): the seven rarest in the real train.csv."""


def parse_target(target: object) -> np.ndarray:
    """Parse a Kaggle ``Target`` string (``"0 25"``) into a multi-hot uint8 vector.

    Raises ValueError for an empty target, a token that is not an integer, or a class id
    outside 0..27. Repeated ids are accepted (they name the same class).
    """
    if not isinstance(target, str) and not isinstance(target, int | np.integer):
        raise ValueError(f"Target must be a string of class ids, got {target!r}")
    tokens = str(target).split()
    if not tokens:
        raise ValueError("Target is empty: every image needs at least one class id 0..27")
    vector = np.zeros(NUM_CLASSES, dtype=np.uint8)
    for token in tokens:
        try:
            class_id = int(token)
        except ValueError:
            raise ValueError(f"Target {target!r}: {token!r} is not an integer class id") from None
        if not 0 <= class_id < NUM_CLASSES:
            raise ValueError(
                f"Target {target!r}: class id {class_id} is outside 0..{NUM_CLASSES - 1}"
            )
        vector[class_id] = 1
    return vector


def format_target(vector: Sequence[float] | np.ndarray) -> str:
    """Format a multi-hot (or 0/1 boolean) vector as a Kaggle ``Target`` string, ids ascending."""
    vector = np.asarray(vector)
    if vector.shape != (NUM_CLASSES,):
        raise ValueError(
            f"expected a vector of {NUM_CLASSES} class flags, got shape {vector.shape}"
        )
    return " ".join(str(i) for i in np.flatnonzero(vector))


def targets_to_matrix(targets: Iterable[object]) -> np.ndarray:
    """Parse many Target strings into an N x 28 uint8 multi-hot matrix.

    The error of a bad Target names its position (0-based) in ``targets``.
    """
    rows = []
    for position, target in enumerate(targets):
        try:
            rows.append(parse_target(target))
        except ValueError as error:
            raise ValueError(f"row {position}: {error}") from None
    if not rows:
        return np.zeros((0, NUM_CLASSES), dtype=np.uint8)
    return np.stack(rows)


def class_ids_to_names(class_ids: Iterable[int]) -> list[str]:
    return [CLASS_NAMES[i] for i in class_ids]


def metric_slug(class_id: int) -> str:
    """A metric-name-safe label for one class: ``"08_peroxisomes"``."""
    name = CLASS_NAMES[class_id].lower().replace("&", "and")
    return f"{class_id:02d}_" + "_".join(name.split())
