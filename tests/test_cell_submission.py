"""The 2021 single-cell submission: mask text, prediction strings and the csv, each checked
against pycocotools and against our own RLE decoder (hpa.evaluation.rle)."""

from __future__ import annotations

import base64
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pycocotools import mask as coco_mask

from hpa.core.errors import HPAInputError
from hpa.evaluation.cell_submission import (
    SUBMISSION_COLUMNS,
    decode_mask,
    encode_mask,
    parse_prediction_string,
    prediction_string,
    read_sample_submission,
    write_submission,
)
from hpa.evaluation.rle import (
    counts_to_runs,
    decode_coco_rle_counts,
    encode_coco_rle_counts,
)

NUM_CLASSES = 19

KAGGLE_EMPTY_2048 = "eNoLCAgIMAEABJkBdQ=="
"""The mask of every row of Kaggle's sample_submission.csv: an empty 2048 x 2048 mask."""


def own_decode(text: str, height: int, width: int) -> np.ndarray:
    """Submission mask text -> pixels, with no pycocotools involved."""
    return decode_coco_rle_counts(zlib.decompress(base64.b64decode(text)), height, width)


def blob(height: int, width: int, seed: int) -> np.ndarray:
    """A random cell-like mask: a filled ellipse somewhere (often cut by the border)."""
    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[:height, :width]
    centre_row, centre_column = rng.uniform(-0.2, 1.2) * height, rng.uniform(-0.2, 1.2) * width
    radius_row, radius_column = rng.uniform(0.1, 0.6) * height, rng.uniform(0.1, 0.6) * width
    distance = ((rows - centre_row) / radius_row) ** 2 + (
        (columns - centre_column) / radius_column
    ) ** 2
    return distance <= 1


def masks_to_check() -> list[tuple[str, np.ndarray]]:
    masks = []
    for height, width in ((37, 61), (61, 37), (1, 50), (50, 1), (128, 96)):
        for seed in range(4):
            masks.append((f"blob {height}x{width} #{seed}", blob(height, width, seed)))
        noise = np.random.default_rng(height * width).random((height, width)) < 0.3
        masks.append((f"noise {height}x{width}", noise))
        full = np.ones((height, width), dtype=bool)
        masks.append((f"full {height}x{width}", full))
        masks.append((f"empty {height}x{width}", np.zeros((height, width), dtype=bool)))
        frame = np.zeros((height, width), dtype=bool)
        frame[0, :] = frame[-1, :] = frame[:, 0] = frame[:, -1] = True
        masks.append((f"border {height}x{width}", frame))
        for row, column in ((0, 0), (height - 1, width - 1), (0, width - 1), (height // 2, 0)):
            single = np.zeros((height, width), dtype=bool)
            single[row, column] = True
            masks.append((f"pixel ({row}, {column}) of {height}x{width}", single))
    return masks


def test_masks_round_trip_through_pycocotools_and_our_own_decoder():
    for name, mask in masks_to_check():
        height, width = mask.shape
        text = encode_mask(mask)
        counts = zlib.decompress(base64.b64decode(text))
        expected = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"]
        assert counts == expected, name
        assert encode_coco_rle_counts(mask) == expected, name
        assert sum(counts_to_runs(counts)) == height * width, name
        np.testing.assert_array_equal(own_decode(text, height, width), mask, err_msg=name)
        decoded = decode_mask(text, height, width)
        assert decoded.dtype == bool and decoded.shape == (height, width), name
        np.testing.assert_array_equal(decoded, mask, err_msg=name)


def test_a_large_mask_with_long_and_shrinking_runs_round_trips():
    # long runs need several 5-bit chunks; a short run after a long one gives a negative delta
    mask = np.zeros((600, 700), dtype=bool)
    mask[20:580, 5:690] = True
    mask[300:303, 100:400] = False
    mask[599, 699] = True
    text = encode_mask(mask)
    counts = zlib.decompress(base64.b64decode(text))
    assert counts == coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"]
    np.testing.assert_array_equal(own_decode(text, 600, 700), mask)
    np.testing.assert_array_equal(decode_mask(text, 600, 700), mask)


def test_the_counts_format_by_hand():
    # one row of 11 pixels: runs 2 (0s), 5 (1s), 2 (0s), 2 (1s); the 4th count is stored as
    # 2 - 5 = -3: chunk -3 & 31 = 29 with the sign bit set -> chr(48 + 29) = "M"
    row = np.array([[0, 0, 1, 1, 1, 1, 1, 0, 0, 1, 1]], dtype=bool)
    assert encode_coco_rle_counts(row) == b"252M"
    assert coco_mask.encode(np.asfortranarray(row.astype(np.uint8)))["counts"] == b"252M"
    assert counts_to_runs(b"252M") == [2, 5, 2, 2]
    # 40 = 8 + 1 * 32 takes two chunks: "X" (48 + 8 + 32 for "more follows"), then "1"
    assert counts_to_runs(b"X1") == [40]
    # a mask whose first pixel is set starts with an empty run of 0s
    assert encode_coco_rle_counts(np.ones((1, 1), dtype=bool)) == b"01"


def test_runs_are_column_major():
    # 2 rows x 3 columns with pixel (row 0, column 1) set: column-major position 1 * 2 + 0 = 2
    mask = np.zeros((2, 3), dtype=bool)
    mask[0, 1] = True
    counts = zlib.decompress(base64.b64decode(encode_mask(mask)))
    assert counts_to_runs(counts) == [2, 1, 3]
    transposed = np.zeros((3, 2), dtype=bool)
    transposed[1, 0] = True  # the same pixel of the transposed image
    assert decode_coco_rle_counts(counts, 3, 2).tolist() != transposed.tolist()
    assert decode_coco_rle_counts(counts, 2, 3).tolist() == mask.tolist()


def test_kaggles_sample_mask_is_an_empty_2048_image():
    assert encode_mask(np.zeros((2048, 2048), dtype=bool)) == KAGGLE_EMPTY_2048
    assert not decode_mask(KAGGLE_EMPTY_2048, 2048, 2048).any()
    assert not own_decode(KAGGLE_EMPTY_2048, 2048, 2048).any()


def test_a_mask_of_another_size_or_garbage_is_refused():
    text = encode_mask(blob(40, 30, seed=1))
    with pytest.raises(ValueError, match="original size"):
        decode_mask(text, 40, 31)
    with pytest.raises(ValueError, match="1200 pixels"):
        decode_coco_rle_counts(zlib.decompress(base64.b64decode(text)), 30, 41)
    with pytest.raises(ValueError, match="not base64"):
        decode_mask("not*base64", 40, 30)
    with pytest.raises(ValueError, match="not zlib"):
        decode_mask(base64.b64encode(b"plain").decode(), 40, 30)
    with pytest.raises(ValueError, match="cut off"):
        counts_to_runs(b"X")  # "more follows", then nothing
    with pytest.raises(ValueError, match="2-D"):
        encode_mask(np.zeros((2, 3, 4), dtype=bool))
    with pytest.raises(ValueError, match="0 and 1"):
        encode_mask(np.array([[0, 2]]))


def two_cells(height: int = 24, width: int = 40) -> np.ndarray:
    labels = np.zeros((height, width), dtype=np.int32)
    labels[2:10, 3:15] = 1
    labels[12:23, 20:39] = 2
    return labels


def scores_of(*rows: dict[int, float]) -> np.ndarray:
    scores = np.zeros((len(rows), NUM_CLASSES))
    for row, values in enumerate(rows):
        for class_id, score in values.items():
            scores[row, class_id] = score
    return scores


def test_a_prediction_string_writes_each_cell_once_per_class_with_the_same_mask():
    labels = two_cells()
    scores = scores_of({0: 0.875, 16: 0.0123456789}, {18: 0.5, 3: 1e-7})
    text = prediction_string(labels, scores)
    tokens = text.split(" ")
    assert len(tokens) == 4 * 3
    triples = [tokens[i : i + 3] for i in range(0, len(tokens), 3)]
    assert [t[0] for t in triples] == ["0", "16", "3", "18"]
    assert [t[1] for t in triples] == ["0.875", "0.0123457", "1e-07", "0.5"]
    assert triples[0][2] == triples[1][2] == encode_mask(labels == 1)
    assert triples[2][2] == triples[3][2] == encode_mask(labels == 2)
    assert triples[0][2] != triples[2][2]
    parsed = parse_prediction_string(text, *labels.shape)
    assert [(c, s) for c, s, _ in parsed] == [(0, 0.875), (16, 0.0123457), (3, 1e-7), (18, 0.5)]
    for (_, _, mask), cell in zip(parsed, (1, 1, 2, 2), strict=True):
        np.testing.assert_array_equal(mask, labels == cell)
        np.testing.assert_array_equal(own_decode(encode_mask(mask), *labels.shape), mask)


def test_min_score_drops_low_classes_but_keeps_each_cells_top_class():
    labels = two_cells()
    scores = scores_of({0: 0.875, 16: 0.02}, {18: 0.04, 3: 0.01})
    triples = prediction_string(labels, scores, min_score=0.05).split(" ")
    assert triples[0::3] == ["0", "18"]  # cell 2 has no score above 0.05: its top class, 18


def test_a_list_of_masks_gives_the_same_string_as_the_label_image():
    labels = two_cells()
    scores = scores_of({0: 0.875, 16: 0.25}, {18: 0.5})
    assert prediction_string([labels == 1, labels == 2], scores) == prediction_string(
        labels, scores
    )
    stack = np.stack([labels == 1, labels == 2])
    assert prediction_string(stack, scores) == prediction_string(labels, scores)


def test_no_cells_give_an_empty_string_and_a_cell_without_pixels_is_skipped():
    empty = np.zeros((16, 20), dtype=np.int32)
    assert prediction_string(empty, np.zeros((0, NUM_CLASSES))) == ""
    assert prediction_string(empty, scores_of({2: 0.9})) == ""
    labels = two_cells()
    labels[labels == 1] = 0  # cell 1 is gone, cell 2 keeps its id
    triples = prediction_string(labels, scores_of({0: 0.9}, {5: 0.7})).split(" ")
    assert triples[0::3] == ["5"] and triples[2] == encode_mask(labels == 2)
    with pytest.raises(ValueError, match="scores for 1 cells"):
        prediction_string(two_cells(), scores_of({0: 0.9}))
    with pytest.raises(ValueError, match="probabilities"):
        prediction_string(two_cells(), scores_of({0: 1.5}, {0: 0.5}))


def test_a_bad_prediction_string_is_refused_naming_the_triple():
    mask_text = encode_mask(blob(20, 30, seed=2))
    assert parse_prediction_string("", 20, 30) == []
    with pytest.raises(ValueError, match="multiple of 3"):
        parse_prediction_string(f"0 0.5 {mask_text} 1", 20, 30)
    with pytest.raises(ValueError, match="triple 1: class 19 is outside 0..18"):
        parse_prediction_string(f"0 0.5 {mask_text} 19 0.5 {mask_text}", 20, 30)
    with pytest.raises(ValueError, match="triple 0: confidence 'high'"):
        parse_prediction_string(f"0 high {mask_text}", 20, 30)
    with pytest.raises(ValueError, match="triple 0: .*original size"):
        parse_prediction_string(f"0 0.5 {mask_text}", 20, 31)


def write_sample(path: Path, rows: list[tuple[str, object, object]]) -> Path:
    lines = ["ID,ImageWidth,ImageHeight,PredictionString"]
    lines += [f"{i},{w},{h},0 1 {KAGGLE_EMPTY_2048}" for i, w, h in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_submission_keeps_every_sample_id_in_order_with_its_size(tmp_path: Path):
    sizes = {"c-img": (40, 24), "a-img": (30, 50), "b-img": (24, 24)}  # width, height
    sample_path = write_sample(tmp_path / "sample.csv", [(i, w, h) for i, (w, h) in sizes.items()])
    sample = read_sample_submission(sample_path)
    assert sample.columns.tolist() == ["ID", "ImageWidth", "ImageHeight"]
    assert sample["ID"].tolist() == ["c-img", "a-img", "b-img"]
    cells_c = two_cells(24, 40)
    cells_a = np.zeros((50, 30), dtype=np.int32)
    cells_a[40:50, 0:30] = 1  # touches the bottom border, spans the width
    predictions = {
        "a-img": prediction_string(cells_a, scores_of({7: 0.25, 18: 0.75})),
        "c-img": prediction_string(cells_c, scores_of({0: 0.5}, {1: 0.5, 2: 0.125})),
    }
    out = tmp_path / "out" / "submission.csv"
    write_submission(out, sample, predictions)

    written = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert written.columns.tolist() == list(SUBMISSION_COLUMNS)
    assert written["ID"].tolist() == ["c-img", "a-img", "b-img"]
    assert written["ImageWidth"].tolist() == ["40", "30", "24"]
    assert written["ImageHeight"].tolist() == ["24", "50", "24"]
    assert written["PredictionString"].tolist()[2] == ""
    assert sorted(p.name for p in out.parent.iterdir()) == ["submission.csv"]  # no temporary
    # every mask decodes, with our own decoder, at the size written on its row
    expected_cells = {
        "c-img": [cells_c == 1, cells_c == 2, cells_c == 2],
        "a-img": [cells_a == 1] * 2,
    }
    for row in written.itertuples():
        width, height = int(row.ImageWidth), int(row.ImageHeight)
        tokens = row.PredictionString.split()
        masks = [own_decode(text, height, width) for text in tokens[2::3]]
        assert len(masks) == len(expected_cells.get(row.ID, []))
        for mask, expected in zip(masks, expected_cells.get(row.ID, []), strict=True):
            np.testing.assert_array_equal(mask, expected)
    assert written.loc[1, "PredictionString"].split()[0::3] == ["7", "18"]


def test_a_prediction_for_an_unknown_id_or_of_the_wrong_size_writes_nothing(tmp_path: Path):
    sample = pd.DataFrame({"ID": ["a", "b"], "ImageWidth": [40, 30], "ImageHeight": [24, 30]})
    out = tmp_path / "submission.csv"
    good = prediction_string(two_cells(24, 40), scores_of({0: 0.5}, {1: 0.5}))
    with pytest.raises(HPAInputError, match="ID 'zzz', which is not in the sample submission"):
        write_submission(out, sample, {"a": good, "zzz": good})
    with pytest.raises(HPAInputError, match="ID 'b' \\(width 30, height 30\\): triple 0"):
        write_submission(out, sample, {"a": good, "b": good})
    with pytest.raises(HPAInputError, match="row 1: ImageHeight -3 of ID 'b'"):
        bad_sample = sample.assign(ImageHeight=[24, -3])
        write_submission(out, bad_sample, {"a": good})
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([("a", 40, 24), ("b", "wide", 24)], "line 3: ImageWidth 'wide' of ID 'b'"),
        ([("a", 40, 24), ("b", 30, 0)], "line 3: ImageHeight '0' of ID 'b'"),
        ([("a", 40, 24), ("b", 30, 2.5)], "line 3: ImageHeight '2.5'"),
        ([("a", 40, 24), ("a", 30, 30)], "line 3: ID 'a' repeats the ID of .*line 2"),
        ([("a", 40, 24), ("", 30, 30)], "line 3: empty ID"),
        ([], "header but no rows"),
    ],
)
def test_a_bad_sample_submission_is_refused_naming_the_line(tmp_path: Path, rows, message):
    path = write_sample(tmp_path / "sample.csv", rows)
    with pytest.raises(HPAInputError, match=message) as caught:
        read_sample_submission(path)
    assert str(path) in str(caught.value)


def test_a_sample_submission_without_a_size_column_is_refused(tmp_path: Path):
    path = tmp_path / "sample.csv"
    path.write_text("ID,ImageWidth\na,40\n")
    with pytest.raises(HPAInputError, match="line 1: missing column\\(s\\) ImageHeight"):
        read_sample_submission(path)
    with pytest.raises(HPAInputError, match="file not found"):
        read_sample_submission(tmp_path / "absent.csv")
