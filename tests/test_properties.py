"""Property tests: Target parsing and formatting, and the labels csv validator on arbitrary rows."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpa.core.errors import HPAInputError
from hpa.core.labels import HPA2018, HPA2021
from hpa.data.reader import read_labels_csv

NUM_CLASSES = HPA2018.num_classes

multi_hot = st.lists(st.integers(0, 1), min_size=NUM_CLASSES, max_size=NUM_CLASSES).map(
    lambda flags: np.asarray(flags, dtype=np.uint8)
)
class_id_lists = st.lists(st.integers(0, NUM_CLASSES - 1), min_size=1, max_size=8)
sample_ids = st.text("abcdef0123456789-", min_size=1, max_size=12)
bad_targets = st.one_of(
    st.just(""),
    st.just("   "),
    st.integers(NUM_CLASSES, 10**6).map(str),
    st.integers(-(10**6), -1).map(str),
    st.text("xyz.", min_size=1, max_size=4),
    st.builds(lambda ok, bad: f"{ok} {bad}", st.integers(0, 27), st.integers(28, 99)),
)


@given(multi_hot)
def test_format_then_parse_is_the_identity(vector: np.ndarray) -> None:
    if vector.any():
        np.testing.assert_array_equal(HPA2018.parse(HPA2018.format(vector)), vector)
    else:
        with pytest.raises(ValueError):  # an empty Target is refused: every image has a class
            HPA2018.parse(HPA2018.format(vector))


@given(class_id_lists, st.sampled_from([" ", "  ", " \t"]))
def test_parse_then_format_gives_sorted_unique_ids(class_ids: list[int], separator: str) -> None:
    target = separator.join(map(str, class_ids))
    assert HPA2018.format(HPA2018.parse(target)) == " ".join(map(str, sorted(set(class_ids))))


@given(st.lists(st.integers(0, HPA2021.num_classes - 1), min_size=1, max_size=8))
def test_a_2021_label_cell_round_trips_through_its_pipe_separator(class_ids: list[int]) -> None:
    cell = "|".join(map(str, class_ids))
    assert HPA2021.format(HPA2021.parse(cell)) == "|".join(map(str, sorted(set(class_ids))))


def write_csv(rows: list[tuple[str, str]]) -> Path:
    handle = tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False)
    with handle:
        handle.write("Id,Target\n" + "".join(f"{i},{t}\n" for i, t in rows))
    return Path(handle.name)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(sample_ids, class_id_lists), min_size=1, max_size=20, unique_by=lambda r: r[0]
    )
)
def test_valid_rows_are_accepted(rows) -> None:
    path = write_csv([(i, " ".join(map(str, ids))) for i, ids in rows])
    try:
        ids, labels = read_labels_csv(path, HPA2018)
    finally:
        path.unlink()
    assert ids.tolist() == [i for i, _ in rows]
    for row, (_, class_ids) in enumerate(rows):
        assert set(np.flatnonzero(labels[row]).tolist()) == set(class_ids)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(sample_ids, class_id_lists), min_size=1, max_size=20, unique_by=lambda r: r[0]
    ),
    bad_targets,
    st.data(),
)
def test_an_invalid_row_is_refused_with_its_line_number(rows, bad_target, data) -> None:
    position = data.draw(st.integers(0, len(rows)))
    good = [(i, " ".join(map(str, ids))) for i, ids in rows]
    good.insert(position, ("bad-row-id", bad_target))
    assert f"line {position + 2}" in refusal_of(good)  # the header is line 1


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(sample_ids, class_id_lists), min_size=2, max_size=20, unique_by=lambda r: r[0]
    ),
    st.data(),
)
def test_a_duplicate_id_is_refused_naming_both_lines(rows, data) -> None:
    first = data.draw(st.integers(0, len(rows) - 1))
    good = [(i, " ".join(map(str, ids))) for i, ids in rows]
    good.append((good[first][0], "0"))
    assert f"lines {first + 2} and {len(good) + 1}" in refusal_of(good)


def refusal_of(rows: list[tuple[str, str]]) -> str:
    """The HPAInputError message read_labels_csv gives for a train.csv of ``rows``."""
    path = write_csv(rows)
    try:
        with pytest.raises(HPAInputError) as error:
            read_labels_csv(path, HPA2018)
    finally:
        path.unlink()
    return str(error.value)
