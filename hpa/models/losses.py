"""Multilabel losses over (B, classes) logits and (B, classes) float 0/1 targets."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import sigmoid_focal_loss

BALANCED = "balanced"
REDUCTIONS = ("mean", "sum", "none")


def balanced_pos_weight(
    class_counts: Sequence[int],
    num_images: int,
    max_pos_weight: float | None = 10.0,
) -> torch.Tensor:
    """Per-class positive weight (N - n_c) / n_c, clipped to ``max_pos_weight`` (None: no clip).

    ``class_counts`` (n_c) and ``num_images`` (N) are those of the run's own train split. With
    this weight a class's positives weigh as much in the loss as its negatives; the clip keeps
    the rarest classes (a few dozen images out of tens of thousands) from dominating the gradient.
    Two counts have no ratio to balance and get a defined weight: a class with no train positive
    gets ``max_pos_weight`` (1 without a clip; it has no positive term to weigh anyway), and a
    class that every train image holds gets 1.
    """
    counts = torch.as_tensor(list(class_counts), dtype=torch.float32)
    if counts.ndim != 1 or counts.numel() == 0:
        raise ValueError(f"class counts must be one count per class, got {counts.tolist()}")
    if num_images <= 0 or (counts < 0).any() or (counts > num_images).any():
        raise ValueError(f"class counts must lie in 0..{num_images}, got {counts.tolist()}")
    weights = (num_images - counts) / counts.clamp(min=1)
    if max_pos_weight is not None:
        weights = weights.clamp(max=max_pos_weight)
    absent_weight = 1.0 if max_pos_weight is None else float(max_pos_weight)
    weights = torch.where(counts == 0, torch.tensor(absent_weight), weights)
    return torch.where(counts == num_images, torch.tensor(1.0), weights)


def _pos_weight_tensor(
    pos_weight: Sequence[float] | str | None,
    max_pos_weight: float | None,
    class_counts: Sequence[int] | None,
    num_images: int | None,
) -> torch.Tensor | None:
    if pos_weight is None:
        return None
    if isinstance(pos_weight, str):
        if pos_weight != BALANCED:
            raise ValueError(f"pos_weight must be {BALANCED!r}, a list or None, got {pos_weight!r}")
        if class_counts is None or num_images is None:
            raise ValueError(
                "pos_weight='balanced' needs the train split's class_counts and num_images "
                "(hpa.run.builders passes them from the run's data)"
            )
        return balanced_pos_weight(class_counts, num_images, max_pos_weight=max_pos_weight)
    # list() also accepts the ListConfig that Hydra passes for a list in the config.
    weights = torch.as_tensor(list(pos_weight), dtype=torch.float32)
    if weights.ndim != 1 or weights.numel() == 0:
        raise ValueError(f"pos_weight needs one value per class, got {weights.tolist()}")
    if (weights <= 0).any():
        raise ValueError(f"pos_weight values must be positive, got {weights.tolist()}")
    return weights


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


class BCEWithLogitsLoss(nn.Module):
    """Binary cross-entropy on logits, optionally weighting each class's positives.

    ``pos_weight``: None (no weighting), ``"balanced"`` (see ``balanced_pos_weight``, from
    ``class_counts`` and ``num_images`` of the run's train split, which ``hpa.run.builders``
    passes in, clipped to ``max_pos_weight``) or one explicit value per class.
    """

    pos_weight: torch.Tensor | None

    def __init__(
        self,
        pos_weight: Sequence[float] | str | None = None,
        max_pos_weight: float | None = 10.0,
        reduction: str = "mean",
        class_counts: Sequence[int] | None = None,
        num_images: int | None = None,
    ) -> None:
        super().__init__()
        _check_reduction(reduction)
        self.reduction = reduction
        weights = _pos_weight_tensor(pos_weight, max_pos_weight, class_counts, num_images)
        self.register_buffer("pos_weight", weights, persistent=False)

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


def lovasz_hinge_per_class(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The Lovasz hinge of each class's column over the batch: (B, C) -> (C,).

    Berman et al. 2018 ("The Lovasz-Softmax loss", Alg. 1 and eq. 10): the hinge errors
    ``1 - logit * sign`` (sign +1 for a positive, -1 for a negative) are sorted in decreasing
    order and weighted by the increments of the Jaccard loss of the growing set of mispredictions,
    which makes the loss the convex (Lovasz) extension of 1 - IoU of the column's 0/1 targets.
    ``targets`` must be 0/1.
    """
    signs = 2.0 * targets - 1.0
    errors = 1.0 - logits * signs
    errors_sorted, order = errors.sort(dim=0, descending=True)
    return (F.relu(errors_sorted) * _jaccard_increments(targets.gather(0, order))).sum(dim=0)


def _jaccard_increments(targets_sorted: torch.Tensor) -> torch.Tensor:
    """Per column: Jaccard loss of the first k sorted elements mispredicted, minus that of k-1."""
    positives = targets_sorted.sum(dim=0, keepdim=True)
    intersection = positives - targets_sorted.cumsum(dim=0)
    union = positives + (1.0 - targets_sorted).cumsum(dim=0)  # >= 1: no division by zero
    jaccard = 1.0 - intersection / union
    return torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])


class LovaszHingeLoss(nn.Module):
    """Lovasz hinge per class, averaged over the classes: a surrogate of each class's IoU, the
    quantity closest to the per-class F1 that the competition's macro F1 averages.

    As the 2018 winner (bestfitting) used it: his ``lovasz_hinge(per_class=True)`` applies
    Berman's ``lovasz_hinge_flat`` to each class's column ``logits[:, i]`` over the batch and
    averages over the classes, and his ``SymmetricLovaszLoss`` is
    ``(lovasz_hinge(logits, labels) + lovasz_hinge(-logits, 1 - labels)) / 2``, which also
    rewards getting the negatives right (CellProfiling/HPA-competition-solutions,
    bestfitting/src/layers/loss.py). ``symmetric=False`` keeps only the first half.

    A column without positives has the loss of its largest hinge error (the Jaccard loss of any
    non-empty set of false positives is 1), so the loss needs 0/1 targets and batches large
    enough for most classes to appear.
    """

    def __init__(self, symmetric: bool = True) -> None:
        super().__init__()
        self.symmetric = symmetric

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits, targets = logits.float(), targets.float()
        per_class = lovasz_hinge_per_class(logits, targets)
        if self.symmetric:
            per_class = (per_class + lovasz_hinge_per_class(-logits, 1.0 - targets)) / 2
        return per_class.mean()


class OHEMBCELoss(nn.Module):
    """Binary cross-entropy on every positive and on the hardest negatives only (online hard
    example mining), per class, averaged over the classes.

    In each class's column of the batch the negatives are ranked by their logit (the higher, the
    more confidently wrong: their BCE is softplus(logit)) and the first
    ``ceil(negative_fraction * negatives)`` are kept, so a column always keeps at least one
    negative; the column's loss is the mean BCE of its positives and kept negatives. A fraction
    of the negatives (rather than k per positive) keeps the rare classes, which have no positive
    in most batches, trained on their hardest negatives.

    bestfitting's ``HardLogLoss`` (hard_example.py) is the same per-class scheme with the count
    ``min(n_neg, n_pos + max(2, n_neg // 2), int(0.7 n_neg) + 2)``: half to 70% of the
    negatives, hence the default 0.5.
    """

    def __init__(self, negative_fraction: float = 0.5) -> None:
        super().__init__()
        if not 0.0 < negative_fraction <= 1.0:
            raise ValueError(f"negative_fraction must be in (0, 1], got {negative_fraction}")
        self.negative_fraction = float(negative_fraction)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits, targets = logits.float(), targets.float()
        losses = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        negative = targets < 0.5
        kept = ~negative | _hardest_negatives(logits.detach(), negative, self.negative_fraction)
        per_class = (losses * kept).sum(dim=0) / kept.sum(dim=0)
        return per_class.mean()


def _hardest_negatives(
    logits: torch.Tensor, negative: torch.Tensor, fraction: float
) -> torch.Tensor:
    """Mask of the ceil(fraction * n) highest-logit negatives of each column (n: its negatives)."""
    scores = logits.masked_fill(~negative, -math.inf)  # positives rank after every negative
    order = scores.argsort(dim=0, descending=True)
    ranks = torch.empty_like(order)
    positions = torch.arange(len(order), device=order.device).unsqueeze(1).expand_as(order)
    ranks.scatter_(0, order, positions)
    keep_counts = torch.ceil(negative.sum(dim=0) * fraction)
    return negative & (ranks < keep_counts)


class WeightedSum(nn.Module):
    """A weighted sum of losses: ``sum(weights[name] * terms[name](logits, targets))``.

    ``terms`` maps a name to a loss module (Hydra instantiates them from their ``_target_``
    configs), ``weights`` the same names to non-negative floats; a term of weight 0 is not
    computed. Each term must return a scalar (reduction "mean").
    """

    def __init__(self, terms: Mapping[str, nn.Module], weights: Mapping[str, float]) -> None:
        super().__init__()
        if set(terms) != set(weights):
            raise ValueError(
                f"loss weights {sorted(weights)} must name the loss terms {sorted(terms)}"
            )
        for name, term in terms.items():
            if not isinstance(term, nn.Module):
                raise ValueError(f"loss term {name!r} is not a loss module: {term!r}")
        self.weights = {name: float(weight) for name, weight in weights.items()}
        bad = {name: w for name, w in self.weights.items() if not (math.isfinite(w) and w >= 0)}
        if bad or not any(self.weights.values()):
            raise ValueError(f"loss weights must be finite, >= 0 and not all 0: {self.weights}")
        self.terms = nn.ModuleDict(dict(terms))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        total = logits.new_zeros((), dtype=torch.float32)
        for name, weight in self.weights.items():
            if weight == 0:
                continue
            value = self.terms[name](logits, targets)
            if value.ndim != 0:
                raise ValueError(f"loss term {name!r} must reduce to a scalar, got {value.shape}")
            total = total + weight * value
        return total
