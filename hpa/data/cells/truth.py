"""The truth of every cell of a set, where it exists: what cell mAP is scored against.

A set with cell truth (the synthetic 2021 sets, or masks annotated by hand) keeps it apart from
what a model reads::

    TRUTH/{ID}_cells.png   uint16 label image at the image's size, 0 = background, cells 1..K
    TRUTH/cells.csv        ID,cell_id,Label: each cell's own classes (ids joined by the label
                           set's separator)

``CellTruth`` reads them, refusing a mask whose cells and csv rows disagree, naming the file.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from hpa.core.errors import HPAInputError
from hpa.core.labels import LabelSet

TRUTH_CSV = "cells.csv"
TRUTH_MASK_SUFFIX = "_cells.png"


class CellTruth:
    """The cell truth of the images of one folder (``data.cell_truth``)."""

    def __init__(self, folder: str | Path, label_set: LabelSet) -> None:
        self.folder = Path(folder)
        self.label_set = label_set
        csv_path = self.folder / TRUTH_CSV
        if not csv_path.is_file():
            raise HPAInputError(f"cell truth {csv_path} not found (data.cell_truth)")
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
        id_column = label_set.id_column
        missing = [c for c in (id_column, "cell_id", label_set.column) if c not in table.columns]
        if missing:
            raise HPAInputError(f"{csv_path}: missing column(s) {missing}")
        self._classes: dict[str, dict[int, tuple[int, ...]]] = {}
        for line, row in enumerate(table.itertuples(index=False), start=2):
            record = row._asdict()
            try:
                cell_id = int(record["cell_id"])
                vector = label_set.parse(record[label_set.column])
            except ValueError as error:
                raise HPAInputError(f"{csv_path}, line {line}: {error}") from None
            cells = self._classes.setdefault(record[id_column], {})
            cells[cell_id] = tuple(int(i) for i in np.flatnonzero(vector))

    def has(self, sample_id: str) -> bool:
        return sample_id in self._classes

    def mask_path(self, sample_id: str) -> Path:
        return self.folder / f"{sample_id}{TRUTH_MASK_SUFFIX}"

    def load(self, sample_id: str) -> tuple[np.ndarray, dict[int, tuple[int, ...]]]:
        """(int32 label image, {cell id: its class ids}) of one image."""
        path = self.mask_path(sample_id)
        mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if mask is None or mask.ndim != 2:
            raise HPAInputError(f"{path}: not a single-plane label image")
        labels = mask.astype(np.int32)
        classes = self._classes.get(sample_id, {})
        present = set(np.unique(labels[labels > 0]).tolist())
        if present != set(classes):
            raise HPAInputError(
                f"{path}: cells {sorted(present ^ set(classes))[:5]} are in the mask or in "
                f"{self.folder / TRUTH_CSV}, not both"
            )
        return labels, classes
