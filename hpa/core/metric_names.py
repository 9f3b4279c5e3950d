"""Metric names, defined once: every logger, callback, report and reader asks this module.

``{stage}/{metric}``: ``train/loss``, ``val/f1_macro``, ``test/f1_samples``; a class's F1 is
``{stage}/f1_class/{id:02d}_{name}`` with the name of the run's label set
(``test/f1_class/08_peroxisomes``); a metric at one fixed threshold beside the same metric at
per-class thresholds is ``test/f1_macro@0.5``; the 2021 single-cell task adds ``test/cell_map``.
"""

from __future__ import annotations

from hpa.core.labels import LabelSet

TRAIN = "train"
VAL = "val"
TEST = "test"

LOSS = "loss"
F1_MACRO = "f1_macro"
F1_SAMPLES = "f1_samples"
F1_CLASS = "f1_class"
CELL_MAP = "cell_map"
CELL_AP = "cell_ap"


def metric_name(stage: str, metric: str) -> str:
    """The logged name of ``metric`` at ``stage``: ("val", "f1_macro") -> "val/f1_macro"."""
    return f"{stage}/{metric}"


def per_class_f1_name(stage: str, label_set: LabelSet, class_id: int) -> str:
    """The logged name of one class's F1: (test, hpa2018, 8) -> "test/f1_class/08_peroxisomes"."""
    return metric_name(stage, f"{F1_CLASS}/{label_set.slug(class_id)}")


def per_class_ap_name(stage: str, label_set: LabelSet, class_id: int) -> str:
    """The logged name of one class's cell AP: (test, hpa2021, 0) -> "test/cell_ap/00_nucleoplasm"."""
    return metric_name(stage, f"{CELL_AP}/{label_set.slug(class_id)}")


TRAIN_LOSS = metric_name(TRAIN, LOSS)
VAL_LOSS = metric_name(VAL, LOSS)
VAL_F1_MACRO = metric_name(VAL, F1_MACRO)
VAL_F1_SAMPLES = metric_name(VAL, F1_SAMPLES)
TEST_LOSS = metric_name(TEST, LOSS)
TEST_F1_MACRO = metric_name(TEST, F1_MACRO)
TEST_F1_SAMPLES = metric_name(TEST, F1_SAMPLES)
TEST_CELL_MAP = metric_name(TEST, CELL_MAP)
"""Cell mAP at mask IoU 0.6 (the 2021 competition's score), where cell truth exists."""
CELL_MATCH_RATE = "cell_match_rate"
TEST_CELL_MATCH_RATE = metric_name(TEST, CELL_MATCH_RATE)
"""The share of truth cells that the segmentation matched at mask IoU >= 0.6."""
TEST_RECALL_MINORITY = metric_name(TEST, "recall_minority")
"""Mean test recall of the label set's minority classes (hpa2018: the seed report's seven),
from a run's per-class report: what oversampling and tuned thresholds are meant to raise."""

HEADLINE: tuple[str, ...] = (VAL_F1_MACRO, VAL_F1_SAMPLES, TEST_F1_MACRO, TEST_F1_SAMPLES)
"""The metrics a run is summed up by: its log summary, report, comparison table and eval print."""


def at_threshold(name: str, threshold: float) -> str:
    """A metric computed at one fixed threshold for every class, beside the same metric at the
    per-class thresholds: ("test/f1_macro", 0.5) -> "test/f1_macro@0.5"."""
    return f"{name}@{threshold:g}"


def is_loss(name: str) -> bool:
    """Losses are minimised; every other metric here is maximised."""
    return name.rsplit("/", 1)[-1].startswith(LOSS)


def metric_mode(name: str) -> str:
    """ "min" for a loss, "max" otherwise: the ``mode`` of a checkpoint, early-stopping or
    plateau-scheduler callback that watches ``name``."""
    return "min" if is_loss(name) else "max"
