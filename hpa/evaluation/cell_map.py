"""Cell-level mean average precision at mask IoU 0.6: the score of Kaggle's 2021 HPA task.

The metric follows the Open Images instance-segmentation evaluation that the competition used:

- A prediction is one (predicted cell, class, confidence). A cell counts for the classes that a
  submission writes it for (``cell_submission.written_classes``: every class scored above
  ``min_score``, and its top class in any case); a predicted cell without pixels is no
  prediction (the submission does not write it either).
- Matching, per image and class: the image's predictions of the class, by confidence
  (descending; a stable sort, so ties keep cell order), each take the unmatched truth cell of
  that class with the highest IoU, if that IoU is >= 0.6 (true positive); otherwise the
  prediction is a false positive. A second prediction on an already matched truth cell is a
  false positive. (Truth cells of one label image do not overlap, and no mask can have an
  IoU >= 0.6 > 0.5 with two disjoint cells, so at 0.6 a prediction has at most one candidate.)
- Average precision, per class, over the predictions of all images ranked by confidence
  (descending, stable: ties keep the order in which images were added): Open Images' and PASCAL
  VOC 2010+'s all-point interpolation. Precision is made monotone non-increasing from the right
  (each precision becomes the highest precision at that recall or beyond) and summed over the
  steps of recall: ``AP = sum((r[i] - r[i-1]) * p_interp[i])``, with recall 0 before the first
  prediction. A class with truth cells but no predictions has AP 0.
- mAP: the mean AP over the classes that have at least one truth cell; a class without truth
  cells has AP NaN and is left out of the mean.

Not modelled: Open Images' "group-of" boxes and its per-image verified labels (predictions of a
class never verified for an image are not ignored here: they are false positives).

IoUs are computed from a contingency table of the two label images (one ``bincount`` over the
pixels where both have a cell), not by comparing K x L full masks; ``CellMAP`` keeps, per image,
only each prediction's confidence and whether it was a true positive.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import NamedTuple

import numpy as np

from hpa.core.labels import HPA2021
from hpa.evaluation.cell_submission import (
    CellMasks,
    check_cell_scores,
    iter_cell_masks,
    written_classes,
)

IOU_THRESHOLD = 0.6

# below this many (truth id, predicted id) combinations, the contingency table is one dense
# bincount; above it (thousands of cells in both images), the codes go through np.unique
_DENSE_TABLE_LIMIT = 1 << 24
# truth ids above this are renumbered 1..L first, so that bincounts stay small
_COMPACT_IDS_ABOVE = 1 << 16


class CellOverlaps(NamedTuple):
    """The cells of one image and the (predicted, truth) pairs that overlap enough.

    ``truth_ids``: ids of the truth cells that have pixels, ascending. ``predicted_rows``: score
    rows of the predicted cells that have pixels, ascending. ``pair_rows[i]``,
    ``pair_truth_ids[i]``, ``pair_ious[i]``: a predicted cell, a truth cell, and their IoU, for
    every pair with IoU >= the threshold.
    """

    truth_ids: np.ndarray
    predicted_rows: np.ndarray
    pair_rows: np.ndarray
    pair_truth_ids: np.ndarray
    pair_ious: np.ndarray


def _label_image(labels: np.ndarray, what: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"{what} must be a 2-D label image, got shape {labels.shape}")
    if labels.dtype == bool or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{what} must hold integer cell ids, got dtype {labels.dtype}")
    if not labels.size:
        raise ValueError(f"{what} has no pixels (shape {labels.shape})")
    if not np.can_cast(labels.dtype, np.intp):
        labels = labels.astype(np.int64)  # uint64: np.bincount takes only what fits an intp
    if labels.min() < 0:
        raise ValueError(f"{what} holds negative ids ({labels.min()}); 0 is the background")
    return labels


def cell_overlaps(
    truth_labels: np.ndarray,
    predicted_cells: CellMasks,
    num_predicted: int | None = None,
    iou_threshold: float = IOU_THRESHOLD,
) -> CellOverlaps:
    """The pairs of predicted and truth cells of one image whose mask IoU is >= ``iou_threshold``.

    ``truth_labels``: a label image (0 = background, one id per truth cell). ``predicted_cells``:
    a label image (cell id ``k`` = score row ``k - 1``), a (K, H, W) stack or a sequence of K
    masks (``cell_submission.CellMasks``); ``num_predicted`` is K (the number of score rows),
    by default the largest id of a predicted label image or the number of masks.
    """
    truth = _label_image(truth_labels, "the truth label image")
    truth, original_ids = _compact(truth)
    truth_area = np.bincount(truth.ravel())
    truth_ids = np.flatnonzero(truth_area[1:]) + 1
    if isinstance(predicted_cells, np.ndarray) and predicted_cells.ndim == 2:
        predicted = _label_image(predicted_cells, "the predicted label image")
        if predicted.shape != truth.shape:
            raise ValueError(
                f"the predicted label image is {predicted.shape}, the truth {truth.shape}"
            )
        largest = int(predicted.max()) if predicted.size else 0
        if num_predicted is None:
            num_predicted = largest
        if largest > num_predicted:
            raise ValueError(
                f"the predicted label image holds id {largest}, but there are scores for "
                f"{num_predicted} cells (ids 1..{num_predicted})"
            )
        rows, truth_of_pairs, intersections, predicted_area = _contingency(truth, predicted)
        predicted_rows = np.flatnonzero(predicted_area[1:])
        unions = truth_area[truth_of_pairs] + predicted_area[rows + 1] - intersections
    else:
        masks = list(predicted_cells)
        if num_predicted is None:
            num_predicted = len(masks)
        row_list, truth_list, intersection_list, union_list, present = [], [], [], [], []
        for row, mask in iter_cell_masks(masks, num_predicted):
            if mask.shape != truth.shape:
                raise ValueError(f"predicted mask {row} is {mask.shape}, the truth {truth.shape}")
            present.append(row)
            counts = np.bincount(truth[mask], minlength=truth_area.size)
            overlapped = np.flatnonzero(counts[1:]) + 1
            row_list.append(np.full(overlapped.size, row))
            truth_list.append(overlapped)
            intersection_list.append(counts[overlapped])
            union_list.append(truth_area[overlapped] + int(mask.sum()) - counts[overlapped])
        predicted_rows = np.asarray(present, dtype=np.int64)
        rows = _joined(row_list)
        truth_of_pairs = _joined(truth_list)
        intersections = _joined(intersection_list)
        unions = _joined(union_list)
    ious = intersections / np.maximum(unions, 1)
    keep = ious >= iou_threshold
    if original_ids is not None:
        truth_ids, truth_of_pairs = original_ids[truth_ids], original_ids[truth_of_pairs]
    return CellOverlaps(truth_ids, predicted_rows, rows[keep], truth_of_pairs[keep], ious[keep])


def _compact(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(labels renumbered 0, 1..L, the original id of each new one) when the largest id is
    above ``_COMPACT_IDS_ABOVE``; else (labels, None)."""
    if not labels.size or int(labels.max()) <= _COMPACT_IDS_ABOVE:
        return labels, None
    original_ids = np.union1d([0], np.unique(labels)).astype(np.int64)
    return np.searchsorted(original_ids, labels), original_ids


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)


def _contingency(
    truth: np.ndarray, predicted: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(predicted row, truth id, intersection) of every overlapping pair, and the predicted areas.

    The contingency table of the two label images, counted over the pixels where both hold a
    cell: one bincount of ``truth_id * (largest predicted id + 1) + predicted_id``.
    """
    predicted_area = np.bincount(predicted.ravel())
    width = predicted_area.size
    both = (truth > 0) & (predicted > 0)
    codes = truth[both].astype(np.int64) * width + predicted[both].astype(np.int64)
    if (int(truth.max()) + 1) * width <= _DENSE_TABLE_LIMIT:
        table = np.bincount(codes)
        codes = np.flatnonzero(table)
        intersections = table[codes]
    else:
        codes, intersections = np.unique(codes, return_counts=True)
    truth_ids, predicted_ids = np.divmod(codes, width)
    return predicted_ids - 1, truth_ids, intersections, predicted_area


def segmentation_match_rate(
    truth_labels: np.ndarray, predicted_cells: CellMasks, iou: float = IOU_THRESHOLD
) -> tuple[int, int]:
    """(matched, total): how many of the image's ``total`` truth cells a predicted cell matches
    one-to-one with IoU >= ``iou``. Pairs are taken greedily by IoU, highest first (at
    ``iou`` > 0.5 with non-overlapping cells every cell has at most one partner anyway)."""
    overlaps = cell_overlaps(truth_labels, predicted_cells, iou_threshold=iou)
    order = np.argsort(-overlaps.pair_ious, kind="stable")
    used_rows: set[int] = set()
    used_truth: set[int] = set()
    for row, truth_id in zip(
        overlaps.pair_rows[order].tolist(), overlaps.pair_truth_ids[order].tolist(), strict=True
    ):
        if row not in used_rows and truth_id not in used_truth:
            used_rows.add(row)
            used_truth.add(truth_id)
    return len(used_truth), len(overlaps.truth_ids)


def average_precision(
    confidences: np.ndarray, is_true_positive: np.ndarray, num_truth: int
) -> float:
    """The all-point interpolated AP of ranked predictions (Open Images, PASCAL VOC 2010+).

    Predictions are ranked by confidence, descending (stable: ties keep their given order).
    Precision is made non-increasing from the right and integrated over the recall steps:
    ``sum((recall[i] - recall[i-1]) * interpolated_precision[i])`` from recall 0. NaN when
    ``num_truth`` is 0; 0.0 when there are truth cells but no true positives.
    """
    confidences = np.asarray(confidences, dtype=np.float64)
    is_true_positive = np.asarray(is_true_positive, dtype=bool)
    if confidences.shape != is_true_positive.shape or confidences.ndim != 1:
        raise ValueError("confidences and is_true_positive must be 1-D arrays of one length")
    if num_truth <= 0:
        return float("nan")
    if int(is_true_positive.sum()) > num_truth:
        raise ValueError(f"{int(is_true_positive.sum())} true positives for {num_truth} truths")
    order = np.argsort(-confidences, kind="stable")
    hits = is_true_positive[order]
    true_positives = np.cumsum(hits)
    precision = true_positives / np.arange(1, hits.size + 1)
    recall = true_positives / num_truth
    # pad with recall 0 before the first prediction, then make precision non-increasing
    recall = np.concatenate([[0.0], recall])
    precision = np.concatenate([[0.0], precision])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1]) + 1
    return float(np.sum((recall[steps] - recall[steps - 1]) * precision[steps]))


class CellMAP:
    """Cell mAP over images added one at a time: per image, only each prediction's class,
    confidence and true-positive flag are kept, never the masks.

    ``num_classes``: C, the columns of the scores (``HPA2021``: 19). ``iou_threshold``: the
    mask IoU a true positive needs (>=). ``min_score``: as in ``prediction_string``, so that
    the metric scores what the submission writes.
    """

    def __init__(
        self,
        num_classes: int = HPA2021.num_classes,
        iou_threshold: float = IOU_THRESHOLD,
        min_score: float = 0.0,
    ) -> None:
        self.num_classes = int(num_classes)
        self.iou_threshold = float(iou_threshold)
        self.min_score = float(min_score)
        self._image_ids: set[Hashable] = set()
        self._num_truth = np.zeros(self.num_classes, dtype=np.int64)
        self._confidences: list[list[np.ndarray]] = [[] for _ in range(self.num_classes)]
        self._hits: list[list[np.ndarray]] = [[] for _ in range(self.num_classes)]

    def add_image(
        self,
        image_id: Hashable,
        truth_labels: np.ndarray,
        truth_classes: Mapping[int, Iterable[int]],
        predicted_cells: CellMasks,
        predicted_scores: np.ndarray,
    ) -> None:
        """Match one image's predictions to its truth and keep the outcome.

        ``truth_labels``: a label image of the truth cells (0 = background). ``truth_classes``:
        each truth cell id present in it -> its class ids (exactly those ids: ValueError
        otherwise). ``predicted_cells``: a label image or masks at the same size
        (``cell_submission.CellMasks``). ``predicted_scores``: (K, C) probabilities, row ``k``
        for predicted cell ``k`` (label id ``k + 1``). An image id may be added once.
        """
        if image_id in self._image_ids:
            raise ValueError(f"image {image_id!r} was already added")
        scores = check_cell_scores(predicted_scores, self.num_classes)
        overlaps = cell_overlaps(truth_labels, predicted_cells, scores.shape[0], self.iou_threshold)
        classes_of = self._truth_classes(image_id, overlaps.truth_ids, truth_classes)
        # the image's candidate truth cells of each predicted cell, best IoU first
        candidates: dict[int, list[tuple[int, float]]] = {}
        order = np.argsort(-overlaps.pair_ious, kind="stable")
        for row, truth_id, iou in zip(
            overlaps.pair_rows[order].tolist(),
            overlaps.pair_truth_ids[order].tolist(),
            overlaps.pair_ious[order].tolist(),
            strict=True,
        ):
            candidates.setdefault(row, []).append((truth_id, iou))
        predictions: list[list[int]] = [[] for _ in range(self.num_classes)]
        for row in overlaps.predicted_rows.tolist():
            for class_id in written_classes(scores[row], self.min_score).tolist():
                predictions[class_id].append(row)
        for class_id, rows in enumerate(predictions):
            truth_of_class = {t for t, classes in classes_of.items() if class_id in classes}
            self._num_truth[class_id] += len(truth_of_class)
            if not rows:
                continue
            confidences = scores[rows, class_id]
            ranked = np.asarray(rows)[np.argsort(-confidences, kind="stable")]
            matched: set[int] = set()
            hits = np.zeros(len(rows), dtype=bool)
            for rank, row in enumerate(ranked.tolist()):
                for truth_id, _ in candidates.get(row, ()):
                    if truth_id in truth_of_class and truth_id not in matched:
                        matched.add(truth_id)
                        hits[rank] = True
                        break
            self._confidences[class_id].append(scores[ranked, class_id])
            self._hits[class_id].append(hits)
        self._image_ids.add(image_id)

    def _truth_classes(
        self,
        image_id: Hashable,
        truth_ids: np.ndarray,
        truth_classes: Mapping[int, Iterable[int]],
    ) -> dict[int, set[int]]:
        classes_of = {int(t): {int(c) for c in classes} for t, classes in truth_classes.items()}
        present = set(truth_ids.tolist())
        unlabelled = sorted(present - set(classes_of))
        if unlabelled:
            raise ValueError(f"image {image_id!r}: truth cells {unlabelled} have no classes")
        absent = sorted(set(classes_of) - present)
        if absent:
            raise ValueError(
                f"image {image_id!r}: truth cells {absent} have classes but no pixels in the "
                "truth label image"
            )
        for truth_id, classes in classes_of.items():
            outside = sorted(c for c in classes if not 0 <= c < self.num_classes)
            if outside:
                raise ValueError(
                    f"image {image_id!r}: truth cell {truth_id} has class ids {outside} outside "
                    f"0..{self.num_classes - 1}"
                )
        return classes_of

    def compute(self) -> dict:
        """The scores so far.

        ``map``: mean AP over the classes with truth cells (NaN if none has). ``ap``: (C,) AP per
        class, NaN for classes without truth cells. ``truth_cells``, ``predictions``,
        ``true_positives``: (C,) counts per class. ``images``: images added.
        ``iou_threshold``: the threshold used.
        """
        ap = np.full(self.num_classes, np.nan)
        predictions = np.zeros(self.num_classes, dtype=np.int64)
        true_positives = np.zeros(self.num_classes, dtype=np.int64)
        for class_id in range(self.num_classes):
            confidences = _joined_floats(self._confidences[class_id])
            hits = _joined_bools(self._hits[class_id])
            predictions[class_id] = hits.size
            true_positives[class_id] = int(hits.sum())
            ap[class_id] = average_precision(confidences, hits, int(self._num_truth[class_id]))
        scored = ~np.isnan(ap)
        return {
            "map": float(ap[scored].mean()) if scored.any() else float("nan"),
            "ap": ap,
            "truth_cells": self._num_truth.copy(),
            "predictions": predictions,
            "true_positives": true_positives,
            "images": len(self._image_ids),
            "iou_threshold": self.iou_threshold,
        }


def _joined_floats(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float64)


def _joined_bools(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=bool)
