"""The leak report of a run (``duplicate_leaks.csv``): near-duplicate pairs per pair of splits.

Counted twice: for the split that ignoring duplicates would give (with every readable external
image), which shows what grouping them prevents, and for this run's split (with the external
images it uses), where a pair joining training and evaluation images is a leak.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from hpa.data.duplicates import EXTERNAL, LEAKS, RowPairs, leak_report, split_pair_counts
from hpa.data.external import ExternalRoot
from hpa.data.grouped_split import RootSplit

log = logging.getLogger(__name__)


def duplicate_leak_report(
    root_split: RootSplit,
    externals: Sequence[ExternalRoot],
    external_pairs: Sequence[RowPairs],
    split_file: Path | None = None,
) -> pd.DataFrame | None:
    """The pair counts of ``root_split`` (with its duplicates looked for) and of the external
    roots' pairs with data.root (hpa.data.external.join_external_roots); None without a
    duplicate search. Logs the report, and warns when this run's split leaks."""
    if root_split.duplicates is None:
        return None
    root_pairs = root_split.duplicates.pairs
    counts = {}
    for name, assignment, external_rows in (
        ("ignoring_duplicates", root_split.assignment_ignoring_duplicates, "readable"),
        ("this_run", root_split.assignment, "used"),
    ):
        splits_a = [assignment[root_pairs.first]]
        splits_b = [assignment[root_pairs.second]]
        for external, pairs in zip(externals, external_pairs, strict=True):
            counted = getattr(external, external_rows)[pairs.first]
            splits_a.append(np.full(int(counted.sum()), EXTERNAL))
            splits_b.append(assignment[pairs.second[counted]])
        counts[name] = split_pair_counts(np.concatenate(splits_a), np.concatenate(splits_b))
    report = leak_report(counts["ignoring_duplicates"], counts["this_run"])
    log.info("duplicate pairs per pair of splits:\n%s", report.to_string(index=False))
    leaks_left = sum(counts["this_run"][name] for name in LEAKS)
    if leaks_left:
        log.warning(
            "%d duplicate pair(s) join training and evaluation images (the split file %s "
            "was made without grouping duplicates?)",
            leaks_left,
            split_file,
        )
    return report
