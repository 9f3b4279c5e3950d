"""The weighted mean of cell-scoring methods and its weights chosen on validation
(hpa.evaluation.cell_ensemble), on hand-made frames whose answers are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hpa.core.errors import HPAInputError
from hpa.evaluation.cell_ensemble import aligned, choose_weights, combine, weight_grid

KEYS = ["ID", "cell_id"]
NAMES = ["a", "b"]


def frame(rows):
    return pd.DataFrame(rows, columns=[*KEYS, *NAMES])


def test_the_weight_grid_covers_the_simplex_in_steps():
    grid = weight_grid(3, 0.25)
    assert len(grid) == 15  # (4 + 2 choose 2)
    assert all(np.isclose(weights.sum(), 1.0) and (weights >= 0).all() for weights in grid)
    assert {tuple(weights) for weights in weight_grid(2, 0.5)} == {(0, 1), (0.5, 0.5), (1, 0)}
    with pytest.raises(HPAInputError, match="must divide 1"):
        weight_grid(2, 0.3)


def test_members_are_aligned_by_cell_and_must_hold_the_same_cells():
    first = frame([("x", 2, 0.2, 0.4), ("x", 1, 0.6, 0.8)])
    second = frame([("x", 1, 0.0, 0.0), ("x", 2, 1.0, 1.0)])
    one, two = aligned([first, second], KEYS, NAMES)
    assert list(one["cell_id"]) == [1, 2] and list(two["cell_id"]) == [1, 2]
    mixed = combine([one, two], [0.5, 0.5], KEYS, NAMES)
    np.testing.assert_allclose(mixed[NAMES].to_numpy(), [[0.3, 0.4], [0.6, 0.7]])
    with pytest.raises(HPAInputError, match="member 1 scores other cells"):
        aligned([first, second.iloc[:1]], KEYS, NAMES)
    with pytest.raises(HPAInputError, match=r"member 0: missing column\(s\) \['b'\]"):
        aligned([first.drop(columns="b"), second], KEYS, NAMES)


def test_the_chosen_weights_are_those_of_the_best_score():
    good = frame([("x", 1, 1.0, 0.0)])
    bad = frame([("x", 1, 0.0, 1.0)])
    members = aligned([bad, good], KEYS, NAMES)

    def score(combined):  # best when "a" is high and "b" low: all weight on `good`
        return float(combined["a"].iloc[0] - combined["b"].iloc[0])

    weights, tried = choose_weights(members, score, KEYS, NAMES, step=0.5)
    np.testing.assert_allclose(weights, [0.0, 1.0])
    assert list(tried["score"]) == sorted(tried["score"], reverse=True)
    assert len(tried) == 3
