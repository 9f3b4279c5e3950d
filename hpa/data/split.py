"""Multilabel-stratified train/val/test splits (iterative stratification, Sechidis et al. 2011).

A split is an array holding one of SPLITS per row of the label matrix. The test rows are held
out first and depend only on (labels, groups, test fraction, seed), so the 3-way split and every
k-fold split made with the same seed share one test set.

``groups`` (a group label per row, e.g. the near-duplicate groups of hpa.data.duplicates) keeps
the rows of a group together: the groups are split, stratified by the union of their rows'
labels, and each row goes where its group goes. Fractions then count groups, not rows. When
every group is one row the split is the same as without groups.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold, MultilabelStratifiedShuffleSplit

from hpa.core.errors import HPAInputError
from hpa.core.io import write_csv
from hpa.data.reader import read_csv_table

if TYPE_CHECKING:
    from hpa.data.config import SplitConfig

logger = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val", "test")

_SPLIT_DTYPE = "<U5"
_MAX_LISTED = 5


def assign_splits(
    labels: np.ndarray,
    ids: np.ndarray,
    config: SplitConfig,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """The split of every row of a table (``ids``, ``labels``) as ``config`` says: read from its
    split file, else fold ``config.fold`` of a k-fold split, else the 3-way split of its
    fractions. The rows of one of ``groups`` share their split (a split file is taken as it is).
    """
    if config.split_file is not None:
        logger.info("reading the split from %s", config.split_file)
        return load_split(config.split_file, ids)
    if config.num_folds:
        return kfold_split(
            labels,
            num_folds=config.num_folds,
            fold=config.fold,
            test_fraction=config.fractions[2],
            seed=config.seed,
            groups=groups,
        )
    return train_val_test_split(labels, config.fractions, seed=config.seed, groups=groups)


def train_val_test_split(
    labels: np.ndarray,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """Assign each row to "train", "val" or "test", stratified over all the label columns.

    ``fractions`` = (train, val, test); train must be positive, val or test may be 0 to leave
    that split empty. Test is held out first, then val from the remaining rows. The rows of one
    of ``groups`` always share their split.
    """
    labels = _checked_labels(labels)
    train_fraction, val_fraction, test_fraction = _checked_fractions(fractions)
    _check_seed(seed)
    row_unit, unit_labels = _split_units(labels, groups)

    is_test = _stratified_hold_out(unit_labels, test_fraction, seed)
    remaining_units = np.flatnonzero(~is_test)
    val_share_of_remaining = val_fraction / (train_fraction + val_fraction)
    is_val_among_remaining = _stratified_hold_out(
        unit_labels[remaining_units], val_share_of_remaining, seed
    )

    unit_assignment = np.full(len(unit_labels), "train", dtype=_SPLIT_DTYPE)
    unit_assignment[is_test] = "test"
    unit_assignment[remaining_units[is_val_among_remaining]] = "val"
    assignment = unit_assignment[row_unit]
    _log_sizes(assignment, f"split fractions {tuple(fractions)}, seed {seed}", len(unit_labels))
    return assignment


def kfold_split(
    labels: np.ndarray,
    num_folds: int,
    fold: int,
    test_fraction: float = 0.15,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """Assign rows for fold ``fold`` of a stratified k-fold over the non-test rows.

    The test rows are those of ``train_val_test_split`` with the same seed, test fraction and
    groups; fold ``fold`` of the rest is "val", the other folds "train". The rows of one of
    ``groups`` always share their split.
    """
    labels = _checked_labels(labels)
    if isinstance(num_folds, bool) or not isinstance(num_folds, int | np.integer) or num_folds < 2:
        raise HPAInputError(f"num_folds must be an integer >= 2, got {num_folds!r}")
    if (
        isinstance(fold, bool)
        or not isinstance(fold, int | np.integer)
        or not 0 <= fold < num_folds
    ):
        raise HPAInputError(f"fold must be an integer in 0..{num_folds - 1}, got {fold!r}")
    if not 0.0 <= test_fraction < 1.0:
        raise HPAInputError(f"test_fraction must be in [0, 1), got {test_fraction!r}")
    _check_seed(seed)
    row_unit, unit_labels = _split_units(labels, groups)

    is_test = _stratified_hold_out(unit_labels, test_fraction, seed)
    remaining_units = np.flatnonzero(~is_test)
    fold_of_remaining = _stratified_fold_numbers(unit_labels[remaining_units], num_folds, seed)

    unit_assignment = np.full(len(unit_labels), "test", dtype=_SPLIT_DTYPE)
    unit_assignment[remaining_units] = np.where(fold_of_remaining == fold, "val", "train")
    assignment = unit_assignment[row_unit]
    _log_sizes(
        assignment,
        f"fold {fold} of {num_folds}, test fraction {test_fraction}, seed {seed}",
        len(unit_labels),
    )
    return assignment


def save_split(
    path: str | Path,
    ids: np.ndarray,
    assignment: np.ndarray,
    fold: int | None = None,
) -> None:
    """Write ``Id,split`` (plus a ``fold`` column for a k-fold split) atomically."""
    path = Path(path)
    ids = np.asarray(ids)
    assignment = np.asarray(assignment)
    if ids.shape != assignment.shape or ids.ndim != 1:
        raise ValueError(f"ids {ids.shape} and assignment {assignment.shape} must be equal 1-d")
    unknown = sorted(set(assignment.tolist()) - set(SPLITS))
    if unknown:
        raise ValueError(f"unknown split name(s) {unknown}; expected {SPLITS}")
    if len(np.unique(ids)) != len(ids):
        raise ValueError("ids must be unique")

    table = pd.DataFrame({"Id": ids, "split": assignment})
    if fold is not None:
        table["fold"] = int(fold)
    write_csv(path, table)  # atomic: readers never see half a file
    logger.info("wrote split of %d ids to %s", len(ids), path)


def load_split(path: str | Path, ids: np.ndarray) -> np.ndarray:
    """Read a split file written by ``save_split``, aligned to ``ids`` (one split name per id)."""
    path = Path(path)
    table = read_csv_table(path, ("Id", "split"))
    file_ids = [str(sample_id).strip() for sample_id in table["Id"]]
    file_splits = [str(split).strip() for split in table["split"]]

    unknown_lines = [
        f"line {line} ({sample_id}: {split!r})"
        for line, sample_id, split in zip(table.index.tolist(), file_ids, file_splits, strict=True)
        if split not in SPLITS
    ]
    if unknown_lines:
        raise HPAInputError(
            f"{path}: {len(unknown_lines)} row(s) with a split name other than "
            f"{', '.join(SPLITS)}: {_first_few(unknown_lines)}"
        )

    split_of_id: dict[str, str] = {}
    for line, sample_id, split in zip(table.index.tolist(), file_ids, file_splits, strict=True):
        if sample_id in split_of_id:
            raise HPAInputError(f"{path}, line {line}: duplicate Id {sample_id!r}")
        split_of_id[sample_id] = split

    wanted_ids = [str(sample_id) for sample_id in np.asarray(ids).tolist()]
    missing_ids = [sample_id for sample_id in wanted_ids if sample_id not in split_of_id]
    if missing_ids:
        raise HPAInputError(
            f"{path}: {len(missing_ids)} id(s) of the dataset are not in the split file "
            f"(was it made for another csv?): {_first_few(missing_ids)}"
        )
    wanted_set = set(wanted_ids)
    extra_ids = [sample_id for sample_id in file_ids if sample_id not in wanted_set]
    if extra_ids:
        raise HPAInputError(
            f"{path}: {len(extra_ids)} id(s) in the split file are not in the dataset "
            f"(was it made for another csv?): {_first_few(extra_ids)}"
        )
    return np.asarray([split_of_id[sample_id] for sample_id in wanted_ids], dtype=_SPLIT_DTYPE)


def _split_units(labels: np.ndarray, groups: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """What is split: (the unit of each row, the labels of each unit). Without groups a unit is a
    row; with groups it is a group, numbered in the order of its first row, and labelled with
    the union of its rows' labels."""
    if groups is None:
        return np.arange(len(labels)), labels
    groups = np.asarray(groups)
    if groups.shape != (len(labels),):
        raise ValueError(f"groups needs one entry per row: {groups.shape} for {len(labels)} rows")
    _, first_rows, row_group = np.unique(groups, return_index=True, return_inverse=True)
    order_of_first_row = np.argsort(np.argsort(first_rows))
    row_group = order_of_first_row[row_group]
    group_labels = np.zeros((len(first_rows), labels.shape[1]), dtype=labels.dtype)
    np.maximum.at(group_labels, row_group, labels)
    return row_group, group_labels


def _stratified_hold_out(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of a multilabel-stratified ``fraction`` of the rows (all False for 0)."""
    if fraction == 0.0:
        return np.zeros(len(labels), dtype=bool)
    splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
    placeholder_features = np.zeros((len(labels), 1))
    try:
        _, held_out_rows = next(splitter.split(placeholder_features, labels))
    except ValueError as error:
        raise HPAInputError(
            f"cannot hold out a fraction {fraction} of {len(labels)} rows: {error}"
        ) from None
    is_held_out = np.zeros(len(labels), dtype=bool)
    is_held_out[held_out_rows] = True
    if is_held_out.all() or not is_held_out.any():
        raise HPAInputError(
            f"holding out a fraction {fraction} of {len(labels)} rows leaves a split empty; "
            "use more rows or other fractions"
        )
    return is_held_out


def _stratified_fold_numbers(labels: np.ndarray, num_folds: int, seed: int) -> np.ndarray:
    """Fold number 0..num_folds-1 of each row, multilabel-stratified."""
    splitter = MultilabelStratifiedKFold(n_splits=num_folds, shuffle=True, random_state=seed)
    fold_numbers = np.full(len(labels), -1, dtype=np.int64)
    placeholder_features = np.zeros((len(labels), 1))
    try:
        for fold_number, (_, fold_rows) in enumerate(splitter.split(placeholder_features, labels)):
            fold_numbers[fold_rows] = fold_number
    except ValueError as error:
        raise HPAInputError(
            f"cannot make {num_folds} folds of {len(labels)} rows: {error}"
        ) from None
    return fold_numbers


def _checked_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[0] == 0 or labels.shape[1] < 2:
        raise ValueError(
            f"labels must be an N x C multi-hot matrix (N >= 1, C >= 2), got {labels.shape}"
        )
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be multi-hot: every entry 0 or 1")
    return labels.astype(np.uint8, copy=False)


def _checked_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    if len(fractions) != 3:
        raise HPAInputError(f"split fractions must be (train, val, test), got {fractions!r}")
    train_fraction, val_fraction, test_fraction = (float(value) for value in fractions)
    if not train_fraction > 0.0 or val_fraction < 0.0 or test_fraction < 0.0:
        raise HPAInputError(
            f"split fractions {tuple(fractions)}: train must be positive, val and test >= 0"
        )
    if not np.isclose(train_fraction + val_fraction + test_fraction, 1.0, atol=1e-6):
        raise HPAInputError(f"split fractions {tuple(fractions)} must sum to 1")
    return train_fraction, val_fraction, test_fraction


def _check_seed(seed: int) -> None:
    # numpy's RandomState (used by iterstrat) takes seeds in 0 .. 2**32 - 1.
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= seed < 2**32:
        raise HPAInputError(f"split seed must be an integer in 0..2**32-1, got {seed!r}")


def _log_sizes(assignment: np.ndarray, description: str, num_units: int) -> None:
    sizes = ", ".join(f"{name} {int((assignment == name).sum())}" for name in SPLITS)
    if num_units != len(assignment):
        description += f", {num_units} groups of duplicates kept together"
    logger.info("split %d rows (%s): %s", len(assignment), description, sizes)


def _first_few(items: Sequence[str]) -> str:
    listed = ", ".join(items[:_MAX_LISTED])
    return listed + (", ..." if len(items) > _MAX_LISTED else "")
