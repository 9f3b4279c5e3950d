"""External training data (``data.external``): Kaggle-layout roots whose images join the train
split only.

Each root holds ``ROOT/train.csv`` (Id,Target) and ``ROOT/train/{Id}_{color}.png`` like
``data.root``. Validation and test stay those of ``data.root``, so that runs with and without
external data are scored on the same images. An external image is dropped when its files are bad
(``data.on_bad_image=skip``; ``error`` stops the run) and, when duplicates are looked for
(hpa.data.duplicates), when it is a near-duplicate of a val or test image of ``data.root``.
Ids must be unique across ``data.root`` and every external root: a clash stops the run.

The run directory's ``external.csv`` lists every row of every external train.csv: ``root``,
``Id``, ``status`` (used | dropped) and the ``reason`` of a drop. split.csv keeps describing the
rows of ``data.root`` only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hpa.data.dataset import RGBYDataset
from hpa.data.duplicates import RowPairs
from hpa.data.reader import read_labels_csv
from hpa.data.validate import checked_samples
from hpa.errors import HPAInputError

log = logging.getLogger(__name__)

USED, DROPPED = "used", "dropped"

_MAX_LISTED = 5


@dataclass
class ExternalRoot:
    """The rows of one external root's train.csv and why any of them are not used."""

    root: Path
    ids: np.ndarray
    labels: np.ndarray
    readable: np.ndarray  # bool per row: its files passed validation (hashed and cached)
    reasons: np.ndarray  # object per row: why it is dropped, "" when it is used

    @property
    def image_dir(self) -> Path:
        return self.root / "train"

    @property
    def used(self) -> np.ndarray:
        return self.reasons == ""

    def drop_duplicates_of_evaluation_images(
        self, pairs: RowPairs, root_ids: np.ndarray, root_assignment: np.ndarray
    ) -> None:
        """Drop the rows that are near-duplicates of a val or test row of data.root
        (``pairs``: external row, data.root row, distance); the closest one is the reason."""
        partner_split = root_assignment[pairs.second]
        leaking = np.flatnonzero(partner_split != "train")
        for pair in leaking[np.argsort(pairs.distance[leaking], kind="stable")][::-1]:
            row = pairs.first[pair]
            self.reasons[row] = (
                f"duplicate of {partner_split[pair]} image {root_ids[pairs.second[pair]]} "
                f"(distance {pairs.distance[pair]})"
            )

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "root": str(self.root),
                "Id": self.ids,
                "status": np.where(self.used, USED, DROPPED),
                "reason": self.reasons,
            }
        )

    def log_counts(self) -> None:
        reasons = pd.Series(self.reasons[~self.used])
        kinds = reasons.str.extract(r"^(bad image|duplicate of \w+)", expand=False)
        dropped = ", ".join(f"{count} {kind}" for kind, count in kinds.value_counts().items())
        log.info(
            "external data %s: %d images, %d used, %d dropped%s",
            self.root,
            len(self.ids),
            int(self.used.sum()),
            len(reasons),
            f" ({dropped})" if dropped else "",
        )


def read_external_roots(
    roots: Sequence[str | Path],
    root_csv: Path,
    root_ids: np.ndarray,
    validate: str,
    on_bad_image: str,
) -> list[ExternalRoot]:
    """Read and validate each external root; refuse ids that another root or csv also has."""
    known: list[tuple[Path, np.ndarray]] = [(root_csv, np.asarray(root_ids))]
    externals = []
    for root in map(Path, roots):
        if not (root / "train.csv").is_file():
            raise HPAInputError(
                f"external data root {root} has no train.csv (data.external lists Kaggle-layout "
                "roots: ROOT/train.csv and ROOT/train/{Id}_{color}.png)"
            )
        csv_path = root / "train.csv"
        ids, labels = read_labels_csv(csv_path)
        for other_csv, other_ids in known:
            _refuse_shared_ids(csv_path, ids, other_csv, other_ids)
        known.append((csv_path, ids))
        keep, skipped = checked_samples(root / "train", ids, validate, on_bad_image)
        reasons = np.full(len(ids), "", dtype=object)
        first_problem = skipped.drop_duplicates("Id").set_index("Id")["problem"]
        for row in np.flatnonzero(~keep):
            reasons[row] = f"bad image: {first_problem[ids[row]]}"
        externals.append(ExternalRoot(root, ids, labels, keep, reasons))
    return externals


def _refuse_shared_ids(
    csv_path: Path, ids: np.ndarray, other_csv: Path, other_ids: np.ndarray
) -> None:
    shared = ids[np.isin(ids, other_ids)]
    if len(shared):
        listed = ", ".join(shared[:_MAX_LISTED]) + (", ..." if len(shared) > _MAX_LISTED else "")
        raise HPAInputError(
            f"{csv_path}: {len(shared)} Id(s) also in {other_csv}: {listed}; Ids must be unique "
            "across data.root and data.external (is a root listed twice?)"
        )


class MultiRootDataset(RGBYDataset):
    """Datasets of several roots read as one: item ``i`` is item ``i - start`` of the part it
    falls in. Labels and ids are those of the parts, one after the other; the parts share one
    augmentation (the first part's)."""

    def __init__(self, parts: Sequence[RGBYDataset]) -> None:
        first = parts[0]
        super().__init__(
            first.image_dir,
            np.concatenate([part.ids for part in parts]),
            np.concatenate([part.labels for part in parts]),
            first.image_size,
            augmentation=first.augmentation,
        )
        self.parts = list(parts)
        self.part_starts = np.cumsum([0] + [len(part) for part in parts[:-1]])

    def _part_of(self, index: int) -> tuple[RGBYDataset, int]:
        part = int(np.searchsorted(self.part_starts, index, side="right")) - 1
        return self.parts[part], int(index - self.part_starts[part])

    def write_image(self, index: int, out: np.ndarray) -> None:
        part, index_in_part = self._part_of(index)
        part.write_image(index_in_part, out)

    def read_image(self, index: int) -> np.ndarray:
        part, index_in_part = self._part_of(index)
        return part.read_image(index_in_part)


def external_samples_table(externals: Sequence[ExternalRoot]) -> pd.DataFrame | None:
    if not externals:
        return None
    return pd.concat([external.table() for external in externals], ignore_index=True)
