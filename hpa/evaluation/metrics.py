"""The F1 metrics of the HPA challenge as torchmetrics (their names: hpa.core.metric_names).

The Kaggle score is the macro F1 over the classes of the label set; the sample F1 (sklearn's
``average="samples"``) is reported alongside. Both metrics take probabilities (sigmoid already
applied) and count a class as predicted when its probability is strictly above the threshold,
as torchmetrics does. Like torchmetrics, float inputs outside [0, 1] are taken for logits and
passed through a sigmoid first.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import precision_recall_fscore_support
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import MultilabelF1Score
from torchmetrics.utilities.compute import normalize_logits_if_needed

from hpa.core.labels import LabelSet
from hpa.core.metric_names import F1_MACRO, F1_SAMPLES, TEST, at_threshold, per_class_f1_name


class MultilabelSampleF1(Metric):
    """Sample-averaged F1, as sklearn's ``f1_score(average="samples")``.

    Each sample scores 2|y ∩ ŷ| / (|y| + |ŷ|) between its true and predicted label sets, or
    ``zero_division`` when both are empty; the metric is the mean over samples. The states are a
    sum and a count, so the result is exact when summed across DDP processes.

    ``threshold`` is one float or one value per class (a length-``num_labels`` sequence/tensor).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    f1_sum: torch.Tensor
    sample_count: torch.Tensor
    threshold: torch.Tensor

    def __init__(
        self,
        num_labels: int,
        threshold: float | Sequence[float] | torch.Tensor = 0.5,
        zero_division: float = 0.0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        thresholds = torch.as_tensor(threshold, dtype=torch.float32)
        if thresholds.ndim > 1 or (thresholds.ndim == 1 and thresholds.numel() != num_labels):
            raise ValueError(f"threshold must be a float or {num_labels} values, got {threshold}")
        self.num_labels = num_labels
        self.zero_division = float(zero_division)
        self.register_buffer("threshold", thresholds, persistent=False)
        self.add_state(
            "f1_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("sample_count", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        if preds.shape != target.shape or preds.ndim != 2 or preds.shape[1] != self.num_labels:
            raise ValueError(
                f"preds and target must both be (N, {self.num_labels}), "
                f"got {tuple(preds.shape)} and {tuple(target.shape)}"
            )
        predicted = self._binarize(preds)
        actual = target > 0.5
        true_positives = (predicted & actual).sum(dim=1)
        label_count = predicted.sum(dim=1) + actual.sum(dim=1)
        f1 = torch.where(
            label_count > 0,
            2 * true_positives / label_count.clamp(min=1),
            torch.full_like(label_count, self.zero_division, dtype=torch.float32),
        )
        self.f1_sum += f1.sum(dtype=torch.float64)
        self.sample_count += preds.shape[0]

    def _binarize(self, preds: torch.Tensor) -> torch.Tensor:
        if not preds.is_floating_point():
            return preds.bool()
        probabilities = normalize_logits_if_needed(preds, "sigmoid")
        # A no-op once the metric lives on the model's device (the threshold is a buffer).
        return probabilities > self.threshold.to(preds.device)

    def compute(self) -> torch.Tensor:
        return (self.f1_sum / self.sample_count.clamp(min=1)).float()


def build_f1_metrics(num_classes: int, threshold: float = 0.5) -> MetricCollection:
    """Macro F1 (the Kaggle score) and sample F1, keyed ``f1_macro`` and ``f1_samples``.

    ``threshold`` is one float: torchmetrics' MultilabelF1Score has no per-class thresholds. For
    per-class thresholds, binarise the probabilities first (0./1. inputs pass any threshold in
    (0, 1) unchanged).
    """
    return MetricCollection(
        {
            F1_MACRO: MultilabelF1Score(
                num_labels=num_classes,
                threshold=float(threshold),
                average="macro",
                zero_division=0,
            ),
            F1_SAMPLES: MultilabelSampleF1(num_labels=num_classes, threshold=float(threshold)),
        }
    )


def build_per_class_f1(num_classes: int, threshold: float = 0.5) -> MultilabelF1Score:
    """F1 of each class separately: ``compute()`` gives a (num_classes,) tensor."""
    return MultilabelF1Score(
        num_labels=num_classes, threshold=float(threshold), average="none", zero_division=0
    )


class StageScores(torch.nn.Module):
    """Every score of an evaluated split (test, by default), from probabilities, the 0/1
    decisions made from them and the targets:

    - ``{stage}/f1_macro``, ``{stage}/f1_samples`` of the decisions (at the per-class thresholds);
    - the same of the probabilities at one fixed threshold, ``{stage}/f1_macro@0.5``...;
    - each class's F1 of the decisions, ``{stage}/f1_class/<id>_<name>``.

    The module's test step updates it batch by batch (and logs the two F1 collections, which
    Lightning computes and syncs across processes); ``score_predictions`` feeds it whole arrays.
    """

    def __init__(
        self, label_set: LabelSet, fixed_threshold: float = 0.5, stage: str = TEST
    ) -> None:
        super().__init__()
        self.stage = stage
        self.label_set = label_set
        num_classes = label_set.num_classes
        self.decided = build_f1_metrics(num_classes).clone(prefix=f"{stage}/")
        self.at_fixed = build_f1_metrics(num_classes, fixed_threshold).clone(
            prefix=f"{stage}/", postfix=at_threshold("", fixed_threshold)
        )
        self.per_class = build_per_class_f1(num_classes)

    def update(
        self, probabilities: torch.Tensor, decisions: torch.Tensor, targets: torch.Tensor
    ) -> None:
        targets = targets.int()
        self.decided.update(decisions, targets)
        self.at_fixed.update(probabilities, targets)
        self.per_class.update(decisions, targets)

    def compute_per_class(self) -> dict[str, torch.Tensor]:
        """Each class's F1 by metric name (and reset): log these at the end of the epoch."""
        values = self.per_class.compute()
        self.per_class.reset()
        return {
            per_class_f1_name(self.stage, self.label_set, i): value
            for i, value in enumerate(values)
        }

    def compute(self) -> dict[str, float]:
        """All scores as plain floats (and reset)."""
        scores = {**self.decided.compute(), **self.at_fixed.compute()}
        self.decided.reset()
        self.at_fixed.reset()
        scores.update(self.compute_per_class())
        return {name: float(value) for name, value in scores.items()}


def score_predictions(
    label_set: LabelSet,
    probabilities: np.ndarray,
    decisions: np.ndarray,
    targets: np.ndarray,
    fixed_threshold: float = 0.5,
    stage: str = TEST,
) -> dict[str, float]:
    """The scores a test run logs (``StageScores``), from whole (N, classes) arrays."""
    scores = StageScores(label_set, fixed_threshold, stage)
    scores.update(
        torch.as_tensor(np.asarray(probabilities), dtype=torch.float32),
        torch.as_tensor(np.asarray(decisions), dtype=torch.float32),
        torch.as_tensor(np.asarray(targets)),
    )
    return scores.compute()


def per_class_report(
    label_set: LabelSet, targets: np.ndarray, predictions: np.ndarray
) -> pd.DataFrame:
    """Precision, recall, F1 and support of each class from (N, classes) 0/1 targets and
    predictions.

    Columns: class_id, class_name, precision, recall, f1, support; one row per class, in class
    order. A score whose denominator is zero is 0, as in the metrics above.
    """
    targets = np.asarray(targets)
    predictions = np.asarray(predictions)
    num_classes = label_set.num_classes
    expected_shape = (targets.shape[0], num_classes) if targets.ndim == 2 else None
    if targets.shape != expected_shape or predictions.shape != targets.shape:
        raise ValueError(
            f"targets and predictions must both be (N, {num_classes}) 0/1 arrays, "
            f"got {targets.shape} and {predictions.shape}"
        )
    class_ids = list(label_set.class_ids)
    precision, recall, f1, support = precision_recall_fscore_support(
        targets.astype(int),
        predictions.astype(int),
        labels=class_ids,
        average=None,
        zero_division=0,
    )
    return pd.DataFrame(
        {
            "class_id": class_ids,
            "class_name": list(label_set.class_names),
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": support,
        }
    )


def minority_recall(per_class: pd.DataFrame, minority_classes: Sequence[int]) -> float:
    """``TEST_RECALL_MINORITY`` of a per-class report (``per_class_report``): the mean recall of
    the label set's minority classes (hpa2018: the seed report's seven); NaN without any."""
    rows = per_class["class_id"].isin(list(minority_classes))
    if not rows.any():
        return float("nan")
    return float(per_class.loc[rows, "recall"].mean())
