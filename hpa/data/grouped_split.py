"""The split step of a data module: every row of ``data.root``'s table gets its split, with
groups of near-duplicates kept in one split.

For training, near-duplicates are looked for among the rows that passed validation
(hpa.data.duplicates: perceptual hashes, cached per root); each group of duplicates then goes to
one split as a whole (hpa.data.split). The hashes stay in the result, for matching the external
roots against (hpa.data.external.join_external_roots). Evaluation reads its split from a file and
looks for nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hpa.data.config import DuplicatesConfig, SplitConfig
from hpa.data.duplicates import RowPairs, duplicate_groups, near_duplicate_pairs, root_hashes
from hpa.data.split import assign_splits
from hpa.data.table import ImageTable

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class RootDuplicates:
    """The near-duplicate pairs (csv rows) among the validated rows of a table; ``hashes[k]`` is
    the hash of csv row ``rows[k]``."""

    rows: np.ndarray
    hashes: np.ndarray
    pairs: RowPairs
    threshold: int

    def groups(self, num_rows: int) -> np.ndarray | None:
        """The duplicate group of each of the table's ``num_rows`` rows; None without pairs."""
        if not len(self.pairs.first):
            return None
        return duplicate_groups(num_rows, self.pairs)


def find_root_duplicates(
    table: ImageTable, keep: np.ndarray, threshold: int, cache_dir: str | Path | None
) -> RootDuplicates:
    """The near-duplicate pairs among the rows of ``table`` that ``keep`` marks."""
    kept_rows = np.flatnonzero(keep)
    hashes = root_hashes(table.image_dir, table.ids[kept_rows], cache_dir)
    pairs = near_duplicate_pairs(hashes, threshold=threshold)
    log.info(
        "near-duplicates (distance <= %d): %d pair(s) among the %d images of %s",
        threshold,
        len(pairs.first),
        len(kept_rows),
        table.root,
    )
    row_pairs = RowPairs(kept_rows[pairs.first], kept_rows[pairs.second], pairs.distance)
    return RootDuplicates(kept_rows, hashes, row_pairs, threshold)


@dataclass(frozen=True, eq=False)
class RootSplit:
    """The split of every csv row of ``data.root`` (``assignment``). With a duplicate search,
    its pairs and the split that ignoring them would give (for the leak report)."""

    assignment: np.ndarray
    duplicates: RootDuplicates | None = None
    assignment_ignoring_duplicates: np.ndarray | None = None


def split_with_duplicate_groups(
    table: ImageTable,
    keep: np.ndarray,
    split: SplitConfig,
    duplicates: DuplicatesConfig | None,
    cache_dir: str | Path | None = None,
) -> RootSplit:
    """Split every row of ``table``. With ``duplicates`` enabled, look for near-duplicates among
    the ``keep`` rows first and keep each group of them in one split; None (evaluation) or
    disabled: a plain split."""
    if duplicates is None or not duplicates.enabled:
        return RootSplit(assign_splits(table.labels, table.ids, split))
    found = find_root_duplicates(table, keep, duplicates.threshold, cache_dir)
    groups = found.groups(len(table))
    assignment = assign_splits(table.labels, table.ids, split, groups)
    if groups is None or split.split_file is not None:
        return RootSplit(assignment, found, assignment)
    log.info("for the leak report, the split that ignoring duplicates would give:")
    return RootSplit(assignment, found, assign_splits(table.labels, table.ids, split))
