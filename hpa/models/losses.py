"""Multilabel losses over (B, 28) logits and (B, 28) float 0/1 targets."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import sigmoid_focal_loss

from hpa.labels import KAGGLE_CLASS_COUNTS, NUM_CLASSES, NUM_KAGGLE_TRAIN_IMAGES

BALANCED = "balanced"
REDUCTIONS = ("mean", "sum", "none")


def balanced_pos_weight(
    class_counts: Sequence[int] = KAGGLE_CLASS_COUNTS,
    num_images: int = NUM_KAGGLE_TRAIN_IMAGES,
    max_pos_weight: float | None = 10.0,
) -> torch.Tensor:
    """Per-class positive weight (N - n_c) / n_c, clipped to ``max_pos_weight`` (None: no clip).

    With this weight a class's positives weigh as much in the loss as its negatives; the clip
    keeps the rarest classes (n_c of 11 out of 31,072) from dominating the gradient.
    """
    counts = torch.as_tensor(list(class_counts), dtype=torch.float32)
    if (counts <= 0).any() or (counts > num_images).any():
        raise ValueError(f"class counts must lie in 1..{num_images}, got {counts.tolist()}")
    weights = (num_images - counts) / counts
    if max_pos_weight is not None:
        weights = weights.clamp(max=max_pos_weight)
    return weights


def _pos_weight_tensor(
    pos_weight: Sequence[float] | str | None, max_pos_weight: float | None
) -> torch.Tensor | None:
    if pos_weight is None:
        return None
    if isinstance(pos_weight, str):
        if pos_weight != BALANCED:
            raise ValueError(f"pos_weight must be {BALANCED!r}, a list or None, got {pos_weight!r}")
        return balanced_pos_weight(max_pos_weight=max_pos_weight)
    # list() also accepts the ListConfig that Hydra passes for a list in the config.
    weights = torch.as_tensor(list(pos_weight), dtype=torch.float32)
    if weights.shape != (NUM_CLASSES,):
        raise ValueError(f"pos_weight needs {NUM_CLASSES} values, got {weights.numel()}")
    if (weights <= 0).any():
        raise ValueError(f"pos_weight values must be positive, got {weights.tolist()}")
    return weights


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


class BCEWithLogitsLoss(nn.Module):
    """Binary cross-entropy on logits, optionally weighting each class's positives.

    ``pos_weight``: None (no weighting), ``"balanced"`` (see ``balanced_pos_weight``, from the
    Kaggle train.csv class counts, clipped to ``max_pos_weight``) or 28 explicit values.
    """

    pos_weight: torch.Tensor | None

    def __init__(
        self,
        pos_weight: Sequence[float] | str | None = None,
        max_pos_weight: float | None = 10.0,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        _check_reduction(reduction)
        self.reduction = reduction
        self.register_buffer(
            "pos_weight", _pos_weight_tensor(pos_weight, max_pos_weight), persistent=False
        )

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # float32 keeps the loss accurate when the model (and this buffer) run in half precision.
        pos_weight = None if self.pos_weight is None else self.pos_weight.float()
        return F.binary_cross_entropy_with_logits(
            logits.float(),
            targets.float(),
            pos_weight=pos_weight,
            reduction=self.reduction,
        )


class FocalLoss(nn.Module):
    """Sigmoid focal loss (Lin et al. 2017), torchvision's implementation.

    Each element's BCE is scaled by (1 - p_t) ** gamma, so well-classified elements count less.
    ``alpha`` in [0, 1] weighs positives by alpha and negatives by 1 - alpha; None or a negative
    value disables that weighting (torchvision's own default is alpha=0.25).
    """

    def __init__(
        self, gamma: float = 2.0, alpha: float | None = None, reduction: str = "mean"
    ) -> None:
        super().__init__()
        _check_reduction(reduction)
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        if alpha is not None and alpha > 1:
            raise ValueError(f"alpha must be in [0, 1], or None/negative for no weighting: {alpha}")
        self.gamma = gamma
        # torchvision's sigmoid_focal_loss treats alpha=-1 as "no alpha weighting".
        self.alpha = -1.0 if alpha is None or alpha < 0 else float(alpha)
        self.reduction = reduction

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # float32 keeps (1 - p_t) ** gamma accurate when the model runs in half precision.
        return sigmoid_focal_loss(
            logits.float(),
            targets.float(),
            alpha=self.alpha,
            gamma=self.gamma,
            reduction=self.reduction,
        )
