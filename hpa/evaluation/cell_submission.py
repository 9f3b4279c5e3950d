"""The submission format of Kaggle's 2021 task, "Human Protein Atlas - Single Cell Classification".

A submission is a csv with one row per test image, in the order of ``sample_submission.csv``::

    ID,ImageWidth,ImageHeight,PredictionString
    0040581b-f1f2-4fbe-b043-b6bfea5404bb,2048,2048,0 0.912 eNqLi8xLzs9N... 16 0.03 eNqLi8xLzs9N...

``ImageWidth`` and ``ImageHeight`` are the image's original size in pixels, copied from the sample
submission. ``PredictionString`` is a space-separated list of ``class confidence mask`` triples:

- ``class``: a class id of the label set (``HPA2021``: 0..18, 18 = Negative);
- ``confidence``: a float, written with ``f"{score:.6g}"`` (six significant digits, so that the
  ranking the metric sorts by has few ties, even among small scores);
- ``mask``: one cell's binary mask at the image's original size, as the base64 (standard
  alphabet, with padding) of the zlib-compressed (level 9) COCO compressed-RLE counts that
  ``pycocotools.mask.encode`` makes (see ``hpa.evaluation.rle`` for that format: column-major
  runs, delta coded, 6-bit ASCII chunks).

A cell is written once per class it is predicted for, with the same mask string each time
(``written_classes``: every class whose score is above ``min_score``, and its top class in any
case). The metric is an average precision per class, which only depends on how predictions rank,
so writing a cell for every class with its confidence never lowers the score; ``min_score`` only
shortens the file. An image with no cells has an empty ``PredictionString``.

Lower-level functions (``decode_mask``, ``parse_prediction_string``, ``prediction_string``)
raise ValueError; the csv functions raise ``HPAInputError`` naming the file or row.
"""

from __future__ import annotations

import base64
import binascii
import math
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from pycocotools import mask as coco_mask

from hpa.core.errors import HPAInputError
from hpa.core.io import write_csv
from hpa.core.labels import HPA2021
from hpa.evaluation.rle import counts_to_runs

ID = "ID"
IMAGE_WIDTH = "ImageWidth"
IMAGE_HEIGHT = "ImageHeight"
PREDICTION_STRING = "PredictionString"
SAMPLE_COLUMNS: tuple[str, ...] = (ID, IMAGE_WIDTH, IMAGE_HEIGHT)
SUBMISSION_COLUMNS: tuple[str, ...] = (ID, IMAGE_WIDTH, IMAGE_HEIGHT, PREDICTION_STRING)

CellMasks = np.ndarray | Sequence[np.ndarray]
"""The cells of one image: a label image (2-D integer array, 0 = background, cell ``k`` = the
pixels equal to ``k`` for k = 1..K, row ``k - 1`` of the scores), a (K, H, W) stack of binary
masks, or a sequence of K 2-D binary masks (mask ``i`` <-> row ``i`` of the scores)."""


# --------------------------------------------------------------------------------------------
# One mask
# --------------------------------------------------------------------------------------------


def encode_mask(mask: np.ndarray) -> str:
    """A 2-D binary mask (bool, or numbers that are all 0 or 1) as submission text.

    The text is ``base64(zlib.compress(counts, 9))`` of the COCO compressed-RLE ``counts`` of
    ``pycocotools.mask.encode(np.asfortranarray(mask.astype(np.uint8)))``; the mask must be at
    the image's original size (height x width).
    """
    # pycocotools reads the pixels column by column: a column-major bool mask is viewed as
    # uint8 without a copy (iter_cell_masks makes its masks column-major)
    column_major = np.asfortranarray(_binary_mask(mask))
    counts = coco_mask.encode(column_major.view(np.uint8))["counts"]
    return base64.b64encode(zlib.compress(counts, 9)).decode("ascii")


def decode_mask(text: str | bytes, height: int, width: int) -> np.ndarray:
    """The ``height`` x ``width`` bool mask of submission text (``encode_mask``'s inverse).

    ValueError when the text is not base64 of zlib data of COCO counts, or when its runs do not
    cover exactly ``height * width`` pixels (a mask written at another size). The text holds
    no shape, so a mask of ``width`` x ``height`` (transposed) cannot be told apart.
    """
    counts = _mask_counts(text)
    _check_mask_size(counts, height, width)
    decoded = coco_mask.decode({"size": [int(height), int(width)], "counts": counts})
    return decoded.astype(bool)


def _binary_mask(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a cell mask must be 2-D (height x width), got shape {mask.shape}")
    if mask.size == 0:
        raise ValueError(f"a cell mask must have pixels, got shape {mask.shape}")
    if mask.dtype == bool:
        return mask
    if np.issubdtype(mask.dtype, np.integer):
        binary = mask.min() >= 0 and mask.max() <= 1
    else:
        binary = np.isin(mask, (0, 1)).all()
    if not binary:
        raise ValueError("a cell mask must be bool or hold only 0 and 1")
    return mask.astype(bool)


def _mask_counts(text: str | bytes) -> bytes:
    """The COCO counts inside submission text: base64-decoded, then zlib-decompressed."""
    try:
        compressed = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ValueError(f"mask {_short(text)} is not base64 text ({error})") from None
    try:
        return zlib.decompress(compressed)
    except zlib.error as error:
        raise ValueError(f"mask {_short(text)} is not zlib-compressed ({error})") from None


def _check_mask_size(counts: bytes, height: int, width: int) -> None:
    height, width = int(height), int(width)
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got height {height}, width {width}")
    pixels = sum(counts_to_runs(counts))
    if pixels != height * width:
        raise ValueError(
            f"a mask covers {pixels} pixels, but the image is {height} x {width} "
            f"({height * width} pixels): masks must be at the image's original size"
        )


def _short(text: str | bytes, length: int = 24) -> str:
    text = text.decode("ascii", "replace") if isinstance(text, bytes) else str(text)
    return repr(text if len(text) <= length else text[:length] + "...")


# --------------------------------------------------------------------------------------------
# One image
# --------------------------------------------------------------------------------------------


def written_classes(scores: np.ndarray, min_score: float = 0.0) -> np.ndarray:
    """The class ids a cell is written for, ascending: every class whose score is strictly above
    ``min_score``, and the cell's top-scoring class even when no score is (lowest id on a tie)."""
    scores = np.asarray(scores, dtype=np.float64)
    chosen = scores > min_score
    chosen[int(np.argmax(scores))] = True
    return np.flatnonzero(chosen)


def iter_cell_masks(cells: CellMasks, num_cells: int) -> Iterator[tuple[int, np.ndarray]]:
    """(row of the scores, 2-D bool mask) of each cell that has at least one pixel, in row order.

    ``cells`` is a label image, a (K, H, W) stack or a sequence of K masks (``CellMasks``); a
    label image may lack some of the ids 1..``num_cells`` (those cells are skipped) but must not
    hold a larger id. A 2-D bool array is refused: pass one mask as ``[mask]``.
    """
    if isinstance(cells, np.ndarray) and cells.ndim == 2:
        labels = cells
        if labels.dtype == bool or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"a label image must hold integer cell ids, got dtype {labels.dtype} "
                "(pass a single binary mask as [mask])"
            )
        if labels.size and (labels.min() < 0 or labels.max() > num_cells):
            raise ValueError(
                f"the label image holds ids {labels.min()}..{labels.max()}, but there are "
                f"scores for {num_cells} cells (ids 1..{num_cells}, 0 = background)"
            )
        if not np.can_cast(labels.dtype, np.intp):
            labels = labels.astype(np.int64)  # uint64: np.bincount takes only what fits an intp
        areas = np.bincount(labels.ravel(), minlength=num_cells + 1)
        # compared in the transposed image, each mask comes out column-major (for encode_mask)
        transposed = np.ascontiguousarray(labels.T)
        for row in np.flatnonzero(areas[1:]).tolist():
            yield row, (transposed == row + 1).T
        return
    masks = list(cells)
    if len(masks) != num_cells:
        raise ValueError(f"got {len(masks)} cell masks but scores for {num_cells} cells")
    shapes = {np.shape(mask) for mask in masks}
    if len(shapes) > 1:
        raise ValueError(f"the cell masks of one image differ in shape: {sorted(shapes)}")
    for row, mask in enumerate(masks):
        mask = _binary_mask(mask)
        if mask.any():
            yield row, mask


def check_cell_scores(cell_scores: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """``cell_scores`` as a float64 (K, C) array; ValueError unless every score is a probability
    (finite, in [0, 1]) and, when given, C is ``num_classes``."""
    scores = np.asarray(cell_scores, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"cell scores must be a (cells, classes) array, got shape {scores.shape}")
    if num_classes is not None and scores.shape[1] != num_classes:
        raise ValueError(f"cell scores have {scores.shape[1]} classes, expected {num_classes}")
    if not np.isfinite(scores).all() or (scores < 0).any() or (scores > 1).any():
        raise ValueError("cell scores must be probabilities: finite numbers in [0, 1]")
    return scores


def prediction_string(
    cell_masks: CellMasks, cell_scores: np.ndarray, min_score: float = 0.0
) -> str:
    """The ``PredictionString`` of one image: ``class confidence mask`` triples joined by spaces.

    ``cell_masks`` are the image's cells at its original size (``CellMasks``); ``cell_scores``
    is a (K, C) array of probabilities, row ``i`` for cell ``i`` (label id ``i + 1``). Cells are
    written in row order, each once per class of ``written_classes(row, min_score)`` (ascending
    class ids) with the same mask text; a cell without pixels is not written. No cells: ``""``.
    """
    scores = check_cell_scores(cell_scores)
    triples: list[str] = []
    for row, mask in iter_cell_masks(cell_masks, scores.shape[0]):
        text = encode_mask(mask)
        for class_id in written_classes(scores[row], min_score):
            triples.append(f"{class_id} {scores[row, class_id]:.6g} {text}")
    return " ".join(triples)


def parse_prediction_string(
    text: str, height: int, width: int, num_classes: int = HPA2021.num_classes
) -> list[tuple[int, float, np.ndarray]]:
    """The ``(class_id, confidence, mask)`` triples of a ``PredictionString``, in its order.

    Each mask is a ``height`` x ``width`` bool array; triples that share a mask text share one
    read-only array. ValueError naming the triple (0-based) for a token count that is not a
    multiple of 3, a class id that is not an integer in 0..``num_classes - 1``, a confidence
    that is not a finite number, or a mask that does not decode at this size.
    """
    tokens = str(text).split()
    if len(tokens) % 3:
        raise ValueError(
            f"a prediction string holds class confidence mask triples, but it has {len(tokens)} "
            "tokens (not a multiple of 3)"
        )
    decoded: dict[str, np.ndarray] = {}
    triples = []
    for index in range(0, len(tokens), 3):
        class_token, confidence_token, mask_text = tokens[index : index + 3]
        where = f"triple {index // 3}"
        class_id = _class_id(class_token, num_classes, where)
        confidence = _confidence(confidence_token, where)
        if mask_text not in decoded:
            try:
                mask = decode_mask(mask_text, height, width)
            except ValueError as error:
                raise ValueError(f"{where}: {error}") from None
            mask.flags.writeable = False
            decoded[mask_text] = mask
        triples.append((class_id, confidence, decoded[mask_text]))
    return triples


def _class_id(token: str, num_classes: int, where: str) -> int:
    try:
        class_id = int(token)
    except ValueError:
        raise ValueError(f"{where}: class {token!r} is not an integer") from None
    if not 0 <= class_id < num_classes:
        raise ValueError(f"{where}: class {class_id} is outside 0..{num_classes - 1}")
    return class_id


def _confidence(token: str, where: str) -> float:
    try:
        confidence = float(token)
    except ValueError:
        raise ValueError(f"{where}: confidence {token!r} is not a number") from None
    if not math.isfinite(confidence):
        raise ValueError(f"{where}: confidence {token!r} is not finite")
    return confidence


def check_prediction_string(
    text: str, height: int, width: int, num_classes: int = HPA2021.num_classes
) -> None:
    """``parse_prediction_string``'s checks without building the masks' pixels: cheap enough to
    run on a whole submission (each distinct mask's runs are summed, not decoded)."""
    tokens = str(text).split()
    if len(tokens) % 3:
        raise ValueError(
            f"a prediction string holds class confidence mask triples, but it has {len(tokens)} "
            "tokens (not a multiple of 3)"
        )
    checked: set[str] = set()
    for index in range(0, len(tokens), 3):
        class_token, confidence_token, mask_text = tokens[index : index + 3]
        where = f"triple {index // 3}"
        _class_id(class_token, num_classes, where)
        _confidence(confidence_token, where)
        if mask_text not in checked:
            try:
                _check_mask_size(_mask_counts(mask_text), height, width)
            except ValueError as error:
                raise ValueError(f"{where}: {error}") from None
            checked.add(mask_text)


# --------------------------------------------------------------------------------------------
# The csv files
# --------------------------------------------------------------------------------------------


def read_sample_submission(path: str | Path) -> pd.DataFrame:
    """``sample_submission.csv`` as a frame of ``ID`` (str), ``ImageWidth`` and ``ImageHeight``
    (int), in the file's order; other columns (its ``PredictionString``) are dropped.

    HPAInputError naming the file and line (the header is line 1) for a missing file or column,
    an empty or repeated ID, or a size that is not a positive integer.
    """
    path = Path(path)
    if not path.is_file():
        raise HPAInputError(f"{path}: file not found")
    try:
        table = pd.read_csv(
            path, dtype=str, keep_default_na=False, skip_blank_lines=False, encoding="utf-8-sig"
        )
    except pd.errors.EmptyDataError:
        raise HPAInputError(
            f"{path}: the file is empty; expected a header {','.join(SUBMISSION_COLUMNS)!r}"
        ) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise HPAInputError(f"{path}: not a readable csv file: {error}") from None
    table.columns = [str(column).strip() for column in table.columns]
    missing = [column for column in SAMPLE_COLUMNS if column not in table.columns]
    if missing:
        raise HPAInputError(
            f"{path}, line 1: missing column(s) {', '.join(missing)}; the header has "
            f"{', '.join(table.columns)}"
        )
    lines = np.arange(len(table)) + 2
    blank = (table == "").all(axis=1).to_numpy()
    table, lines = table[~blank], lines[~blank]
    if table.empty:
        raise HPAInputError(f"{path}: the file has a header but no rows")
    return _checked_sample(table, [f"{path}, line {line}" for line in lines])


def _checked_sample(frame: pd.DataFrame, places: Sequence[str]) -> pd.DataFrame:
    """ID, ImageWidth, ImageHeight of a sample submission, checked; ``places[i]`` names row i."""
    ids: list[str] = []
    widths: list[int] = []
    heights: list[int] = []
    first_place: dict[str, str] = {}
    columns = (frame[ID].tolist(), frame[IMAGE_WIDTH].tolist(), frame[IMAGE_HEIGHT].tolist())
    for place, sample_id, width, height in zip(places, *columns, strict=True):
        sample_id = str(sample_id).strip() if isinstance(sample_id, str) else sample_id
        if not isinstance(sample_id, str) or not sample_id:
            raise HPAInputError(f"{place}: empty ID")
        if sample_id in first_place:
            raise HPAInputError(
                f"{place}: ID {sample_id!r} repeats the ID of {first_place[sample_id]}"
            )
        first_place[sample_id] = place
        for column, value, sizes in ((IMAGE_WIDTH, width, widths), (IMAGE_HEIGHT, height, heights)):
            size = _positive_int(value)
            if size is None:
                raise HPAInputError(
                    f"{place}: {column} {value!r} of ID {sample_id!r} is not a positive integer"
                )
            sizes.append(size)
        ids.append(sample_id)
    return pd.DataFrame({ID: ids, IMAGE_WIDTH: widths, IMAGE_HEIGHT: heights})


def _positive_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | np.integer):
        number = int(value)
    elif isinstance(value, float | np.floating) and float(value).is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    else:
        return None
    return number if number > 0 else None


def write_submission(
    path: str | Path,
    sample_submission: pd.DataFrame,
    predictions: Mapping[str, str],
    num_classes: int = HPA2021.num_classes,
) -> pd.DataFrame:
    """Write the submission csv atomically and return its frame.

    Every ID of ``sample_submission`` (a frame with ``ID``, ``ImageWidth``, ``ImageHeight``, as
    ``read_sample_submission`` returns) gets one row, in its order, with its sizes and the
    ``PredictionString`` of ``predictions[ID]`` (``""`` where an ID has none). Each prediction
    string is checked before anything is written (``check_prediction_string``: triples, class
    ids, confidences, every mask at that image's size); HPAInputError names the ID. A
    prediction for an ID that is not in the sample submission is an HPAInputError naming it.
    """
    missing = [column for column in SAMPLE_COLUMNS if column not in sample_submission.columns]
    if missing:
        raise HPAInputError(
            f"sample_submission: missing column(s) {', '.join(missing)}; it has "
            f"{', '.join(map(str, sample_submission.columns))}"
        )
    places = [f"sample_submission, row {row}" for row in range(len(sample_submission))]
    sample = _checked_sample(sample_submission, places)
    known = set(sample[ID])
    unknown = [sample_id for sample_id in predictions if sample_id not in known]
    if unknown:
        raise HPAInputError(
            f"{path}: a prediction for ID {unknown[0]!r}, which is not in the sample submission "
            f"({len(unknown)} such ID(s))"
        )
    strings = []
    for sample_id, width, height in zip(
        sample[ID], sample[IMAGE_WIDTH], sample[IMAGE_HEIGHT], strict=True
    ):
        text = predictions.get(sample_id, "")
        if not isinstance(text, str):
            raise HPAInputError(
                f"{path}: the prediction for ID {sample_id!r} is a {type(text).__name__}, "
                "not a string"
            )
        try:
            check_prediction_string(text, height, width, num_classes)
        except ValueError as error:
            raise HPAInputError(
                f"{path}: ID {sample_id!r} (width {width}, height {height}): {error}"
            ) from None
        strings.append(text)
    submission = sample.assign(**{PREDICTION_STRING: strings})[list(SUBMISSION_COLUMNS)]
    write_csv(path, submission)
    return submission
