"""Multilabel rows with the class frequencies and labels-per-image law of the real train.csv.

The synthetic sets are in the 2018 layout (``HPA2018``: 28 classes). The counts of the real
Kaggle 2018 train.csv below are facts the generator draws from; they are the only class counts
kept outside the run's own data (tests check them against the real file).

Conditional Poisson sampling: the number k of labels of an image follows the real
labels-per-image distribution; given k, a set S of k distinct classes is drawn with
P(S) proportional to the product of the class weights in S. Inclusion probabilities have a
closed form (elementary symmetric polynomials), so the weights can be calibrated exactly for
the marginal class frequencies to equal the real ones.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from hpa.core.labels import HPA2018

_NUM_CLASSES = HPA2018.num_classes  # the synthetic sets are in the 2018 layout

NUM_KAGGLE_TRAIN_IMAGES = 31_072
"""Images in the Kaggle 2018 train.csv."""

KAGGLE_CLASS_COUNTS: tuple[int, ...] = (
    12885, 1254, 3621, 1561, 1858, 2513, 1008, 2822, 53, 45,
    28, 1093, 688, 537, 1066, 21, 530, 210, 902, 1482,
    172, 3777, 802, 2965, 322, 8228, 328, 11,
)  # fmt: skip
"""Images of each HPA2018 class in the Kaggle 2018 train.csv."""

KAGGLE_LABELS_PER_IMAGE: dict[int, int] = {1: 15126, 2: 12485, 3: 3160, 4: 299, 5: 2}
"""Images of the Kaggle 2018 train.csv with 1, 2, ... labels."""


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
    suffix = np.zeros((_NUM_CLASSES + 1, max_size + 1))
    suffix[_NUM_CLASSES, 0] = 1.0
    for j in range(_NUM_CLASSES - 1, -1, -1):
        suffix[j] = suffix[j + 1]
        suffix[j, 1:] += weights[j] * suffix[j + 1, :-1]
    table = np.zeros((_NUM_CLASSES, max_size + 1))
    for j in range(_NUM_CLASSES):
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
    uniforms = rng.random((_NUM_CLASSES, num_images))
    labels = np.zeros((num_images, _NUM_CLASSES), dtype=np.uint8)
    for class_id in range(_NUM_CLASSES):
        taken = uniforms[class_id] < table[class_id, remaining]
        labels[:, class_id] = taken
        remaining = remaining - taken
    return labels
