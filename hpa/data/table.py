"""The labelled images of a data root, read from its csv: the first step of a data module.

``read_image_table`` reads the Kaggle layout, ``ROOT/train.csv`` and ``ROOT/train/``, with the
columns of the run's label set: the 2018 competition's ``Id,Target`` (ids joined by spaces) or
the 2021 competition's image-level ``ID,Label`` (ids joined by ``|``). A data module for another
layout reads its table with another function that returns an ``ImageTable``; the later steps
(validation, split, external data, cache, datasets) work on the table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hpa.core.errors import HPAInputError
from hpa.core.labels import LabelSet
from hpa.data.reader import read_labels_csv


@dataclass(frozen=True, eq=False)
class ImageTable:
    """Sample ``ids[i]`` has its channel files ``{id}_{color}.{ext}`` in ``image_dir`` and the
    multi-hot labels ``labels[i]`` (N x C uint8), as ``csv_path`` of data root ``root`` lists
    them."""

    root: Path
    csv_path: Path
    image_dir: Path
    ids: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, rows: np.ndarray) -> ImageTable:
        """The table of some rows (a boolean mask or row numbers), in that order."""
        return ImageTable(
            self.root, self.csv_path, self.image_dir, self.ids[rows], self.labels[rows]
        )


TableReader = Callable[[Path, LabelSet], ImageTable]
"""Reads the table of a data root (``data.root`` and each of ``data.external``)."""


def read_image_table(root: str | Path, label_set: LabelSet) -> ImageTable:
    """``ROOT/train.csv`` (its id and label columns those of ``label_set``) and ``ROOT/train/``.

    Raises HPAInputError when the root is missing, and for any bad row of the csv (naming the
    file and its line), a class id outside the label set included.
    """
    root = Path(root)
    if not root.is_dir():
        raise HPAInputError(f"data root {root} does not exist (set data.root=PATH)")
    csv_path = root / "train.csv"
    ids, labels = read_labels_csv(csv_path, label_set)
    return ImageTable(root, csv_path, root / "train", ids, labels)
