"""A weighted mean of several cell-scoring methods' scores per cell (the 2021 task), with the
weights chosen on validation cells.

The members are cells csvs of the same cells (``{split}_cells.csv``: the id column,
``cell_id`` and one score column per class), e.g. an image model's ``broadcast`` and ``cam``
scores and a crop model's ``crops`` scores, all on the masks of one segmenter. ``choose_weights``
tries every weight vector of a grid on the simplex (steps of ``step``) and keeps the one whose
combined validation scores score best (cell mAP, computed by the caller); ``combine`` applies
it to any split. Pure pandas and numpy: the caller reads the files and scores the frames.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from hpa.core.errors import HPAInputError


def weight_grid(num_members: int, step: float) -> list[np.ndarray]:
    """Every weight vector of ``num_members`` non-negative multiples of ``step`` summing to 1."""
    if num_members < 1:
        raise HPAInputError("an ensemble needs at least one member")
    parts = round(1.0 / step)
    if not 0 < step <= 1 or not np.isclose(parts * step, 1.0):
        raise HPAInputError(f"the weight step must divide 1 (0.1, 0.25, 0.5...), got {step}")
    grid = []
    for cuts in itertools.combinations_with_replacement(range(parts + 1), num_members - 1):
        bounds = np.array([0, *cuts, parts])
        grid.append(np.diff(bounds) / parts)
    return grid


def aligned(
    frames: Sequence[pd.DataFrame], keys: Sequence[str], names: Sequence[str]
) -> list[pd.DataFrame]:
    """The members' frames in the same row order (sorted by ``keys``), checked to hold the same
    cells and the class columns ``names``; HPAInputError naming the first member that differs."""
    keys, names = list(keys), list(names)
    result = []
    for position, frame in enumerate(frames):
        missing = [column for column in [*keys, *names] if column not in frame.columns]
        if missing:
            raise HPAInputError(f"ensemble member {position}: missing column(s) {missing}")
        result.append(
            frame.sort_values(keys, kind="stable").reset_index(drop=True)[[*keys, *names]]
        )
    first = result[0][keys]
    for position, frame in enumerate(result[1:], start=1):
        if not frame[keys].equals(first):
            raise HPAInputError(
                f"ensemble member {position} scores other cells than member 0 ({len(frame)} "
                f"rows against {len(first)}): the members must score the same images on the "
                "same masks (one segmenter, one split)"
            )
    return result


def combine(
    frames: Sequence[pd.DataFrame],
    weights: Sequence[float],
    keys: Sequence[str],
    names: Sequence[str],
) -> pd.DataFrame:
    """The weighted mean of the members' scores per cell (frames as ``aligned`` returns them)."""
    if len(weights) != len(frames):
        raise HPAInputError(f"{len(weights)} weights for {len(frames)} ensemble members")
    names = list(names)
    total = sum(
        weight * frame[names].to_numpy(dtype=np.float64)
        for weight, frame in zip(weights, frames, strict=True)
    )
    combined = frames[0][list(keys)].copy()
    combined[names] = np.clip(total, 0.0, 1.0)
    return combined


def choose_weights(
    frames: Sequence[pd.DataFrame],
    score: Callable[[pd.DataFrame], float],
    keys: Sequence[str],
    names: Sequence[str],
    step: float = 0.1,
) -> tuple[np.ndarray, pd.DataFrame]:
    """(the best weights, every weight vector tried with its score, best first): ``score`` of
    the combined frames, over ``weight_grid``. Ties go to the earliest vector of the grid."""
    results = []
    for weights in weight_grid(len(frames), step):
        results.append((*weights, score(combine(frames, weights, keys, names))))
    table = pd.DataFrame(results, columns=[*(f"w{i}" for i in range(len(frames))), "score"])
    best = int(np.nanargmax(table["score"].to_numpy()))
    ordered = table.iloc[np.argsort(-table["score"].to_numpy(), kind="stable")]
    return table.iloc[best, :-1].to_numpy(dtype=np.float64), ordered.reset_index(drop=True)
