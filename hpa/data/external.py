"""External training data (``data.external``): Kaggle-layout roots whose images join the train
split only.

Each root is read like ``data.root``, by the data module's table reader (hpa.data.table:
``ROOT/train.csv`` with the columns of the run's label set, ``ROOT/train/{Id}_{color}.png``).
Validation and test stay those of ``data.root``, so that runs with and without external data are
scored on the same images. An external image is dropped when its files are bad
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

from hpa.core.errors import HPAInputError
from hpa.core.labels import LabelSet
from hpa.data.dataset import RGBYDataset, seed_augmentation
from hpa.data.duplicates import RowPairs, near_duplicate_pairs, root_hashes
from hpa.data.grouped_split import RootSplit
from hpa.data.table import ImageTable, TableReader, read_image_table
from hpa.data.validate import checked_samples

log = logging.getLogger(__name__)

USED, DROPPED = "used", "dropped"

_MAX_LISTED = 5


@dataclass
class ExternalRoot:
    """The rows of one external root's table and why any of them are not used."""

    table: ImageTable
    readable: np.ndarray  # bool per row: its files passed validation (hashed and cached)
    reasons: np.ndarray  # object per row: why it is dropped, "" when it is used

    @property
    def root(self) -> Path:
        return self.table.root

    @property
    def ids(self) -> np.ndarray:
        return self.table.ids

    @property
    def labels(self) -> np.ndarray:
        return self.table.labels

    @property
    def image_dir(self) -> Path:
        return self.table.image_dir

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

    def table_of_samples(self) -> pd.DataFrame:
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
    root_table: ImageTable,
    label_set: LabelSet,
    validate: str,
    on_bad_image: str,
    read_table: TableReader = read_image_table,
) -> list[ExternalRoot]:
    """Read each external root's table with ``label_set`` (``read_table``: as data.root's) and
    validate its images; refuse ids that another root or csv also has."""
    known: list[tuple[Path, np.ndarray]] = [(root_table.csv_path, root_table.ids)]
    externals = []
    for root in map(Path, roots):
        if not root.is_dir():
            raise HPAInputError(
                f"external data root {root} does not exist (data.external lists data roots in "
                "the layout of data.root, such as ROOT/train.csv and ROOT/train/{Id}_{color}.png)"
            )
        table = read_table(root, label_set)
        for other_csv, other_ids in known:
            _refuse_shared_ids(table.csv_path, table.ids, other_csv, other_ids)
        known.append((table.csv_path, table.ids))
        keep, skipped = checked_samples(table.image_dir, table.ids, validate, on_bad_image)
        reasons = np.full(len(table), "", dtype=object)
        first_problem = skipped.drop_duplicates("Id").set_index("Id")["problem"]
        for row in np.flatnonzero(~keep):
            reasons[row] = f"bad image: {first_problem[table.ids[row]]}"
        externals.append(ExternalRoot(table, keep, reasons))
    return externals


def join_external_roots(
    externals: Sequence[ExternalRoot],
    root_table: ImageTable,
    root_split: RootSplit,
    cache_dir: str | Path | None = None,
) -> list[RowPairs]:
    """The external data step, once data.root is split: when its near-duplicates were looked for
    (``root_split.duplicates``), pair each external root's readable images with data.root's and
    drop those that duplicate a val or test image. Returns the pairs (external row, data.root csv
    row, distance) of each external root; none without a duplicate search."""
    pairs_of_roots = []
    if root_split.duplicates is not None:
        pairs_of_roots = [
            _drop_duplicates_of_evaluation_images(external, root_table, root_split, cache_dir)
            for external in externals
        ]
    for external in externals:
        external.log_counts()
    return pairs_of_roots


def _drop_duplicates_of_evaluation_images(
    external: ExternalRoot,
    root_table: ImageTable,
    root_split: RootSplit,
    cache_dir: str | Path | None,
) -> RowPairs:
    root_duplicates = root_split.duplicates
    readable_rows = np.flatnonzero(external.readable)
    hashes = root_hashes(external.image_dir, external.ids[readable_rows], cache_dir)
    pairs = near_duplicate_pairs(
        hashes, root_duplicates.hashes, threshold=root_duplicates.threshold
    )
    log.info(
        "near-duplicates: %d pair(s) of an image of %s and one of %s",
        len(pairs.first),
        external.root,
        root_table.root,
    )
    row_pairs = RowPairs(
        readable_rows[pairs.first], root_duplicates.rows[pairs.second], pairs.distance
    )
    external.drop_duplicates_of_evaluation_images(row_pairs, root_table.ids, root_split.assignment)
    return row_pairs


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
            load_size=first.load_size,
        )
        self.parts = list(parts)
        self.part_starts = np.cumsum([0] + [len(part) for part in parts[:-1]])

    def _part_of(self, index: int) -> tuple[RGBYDataset, int]:
        part = int(np.searchsorted(self.part_starts, index, side="right")) - 1
        return self.parts[part], int(index - self.part_starts[part])

    def write_image(self, index: int, out: np.ndarray) -> None:
        part, index_in_part = self._part_of(index)
        seed_augmentation(part.augmentation, index)  # the part's index is a plain int
        part.write_image(index_in_part, out)

    def read_image(self, index: int) -> np.ndarray:
        part, index_in_part = self._part_of(index)
        return part.read_image(index_in_part)


def external_samples_table(externals: Sequence[ExternalRoot]) -> pd.DataFrame | None:
    if not externals:
        return None
    return pd.concat([external.table_of_samples() for external in externals], ignore_index=True)
