"""Multiple-instance (MIL) pooling: a cell-crop model trained from image-level labels.

A training sample is a "bag": the crops of one image's cells, ``(B, N, 4, s, s)`` uint8 with a
``(B, N)`` bool ``cell_mask`` (True: a real cell; False: padding up to the batch's largest bag)
and the image's ``(B, C)`` labels. The image is labelled with a class when at least one of its
cells shows it, so the cells' outputs are pooled into one bag output that the image label
supervises:

* ``max``: per class, the largest logit of the bag's real cells. Each class is learned from
  the cell that shows it best.
* ``attention``: gated attention MIL (Ilse, Tomczak & Welling, 2018, Eq. 9). Each real cell's
  pooled backbone features ``h_k`` (K values) get a weight
  ``a_k = softmax_k(w^T (tanh(V h_k) * sigmoid(U h_k)))`` over the bag's real cells, and the bag
  logits are ``classifier(sum_k a_k h_k)``. The classifier is linear and the weights sum to 1,
  so the bag logits are the attention-weighted mean of the cells' own logits
  ``classifier(h_k)``: what each cell is scored with at inference.

Padding never contributes: it is masked before the max and the softmax. Every bag must hold at
least one real cell (an image without cells has nothing to pool): a bag with none is refused
with an HPAInputError naming it, rather than pooled into -inf or NaN.

At inference the same network scores single cell crops, ``(n, 4, s, s)``, with its ordinary
forward (``HPAModule(crops)``): no pooling is involved. A model trained on single crops
(``mil_pooling=none``) scores its validation and test bags with ``MAX_POOLING``: an image has
a class when one of its cells has it.
"""

from __future__ import annotations

import torch
from torch import nn

from hpa.core.errors import HPAInputError

MIL_MODES = ("none", "max", "attention")
"""``model.mil_pooling`` values: ``none`` trains on whole images (or single crops)."""


class MILPooling(nn.Module):
    """Pools a bag of cells into one bag output (see the module docstring).

    ``mode="max"``: ``forward(cell_logits (B, N, C), mask (B, N))`` -> (B, C) bag logits.
    ``mode="attention"``: ``forward(cell_features (B, N, K), mask (B, N))`` -> (B, K) pooled
    bag features, to which the caller applies the classifier; ``num_features`` is K and
    ``attention_dim`` the size of the hidden layers V and U (128 in Ilse et al.).
    """

    def __init__(self, mode: str, num_features: int | None = None, attention_dim: int = 128):
        super().__init__()
        check_mil_mode(mode)
        if mode == "none":
            raise HPAInputError("MILPooling needs mode 'max' or 'attention', not 'none'")
        self.mode = mode
        if mode == "attention":
            if not num_features or attention_dim < 1:
                raise HPAInputError(
                    f"attention MIL pooling needs the backbone's feature size and a positive "
                    f"attention_dim (got num_features={num_features}, "
                    f"attention_dim={attention_dim})"
                )
            self.attention_v = nn.Linear(num_features, attention_dim)
            self.attention_u = nn.Linear(num_features, attention_dim)
            self.attention_w = nn.Linear(attention_dim, 1)

    def forward(self, cells: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mask = _check_bags(cells, mask)
        if self.mode == "max":
            return cells.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(dim=1)
        weights = self.attention_weights(cells, mask)
        return torch.einsum("bn,bnk->bk", weights.to(cells.dtype), cells)

    def attention_weights(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, N) gated attention weights of the cells' (B, N, K) features: each bag's weights
        sum to 1 over its real cells and are exactly 0 on padding."""
        if self.mode != "attention":
            raise HPAInputError(f"{self.mode} MIL pooling has no attention weights")
        mask = _check_bags(features, mask)
        gated = torch.tanh(self.attention_v(features)) * torch.sigmoid(self.attention_u(features))
        scores = self.attention_w(gated).squeeze(-1).float()  # (B, N)
        return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=1)


def check_mil_mode(mode: str) -> None:
    """HPAInputError unless ``mode`` is one of ``MIL_MODES``."""
    if mode not in MIL_MODES:
        raise HPAInputError(
            f"model.mil_pooling={mode!r} is not one of {', '.join(MIL_MODES)} (none: train on "
            "images or single crops; max or attention: pool each image's bag of cell crops)"
        )


def bag_logits(
    backbone: nn.Module, pooling: MILPooling, crops: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """(B, C) bag logits of ``crops``, the bags' normalised (B * N, 4, s, s) cell crops, bag
    by bag (cell ``k`` of bag ``b`` at ``b * N + k``), and their (B, N) ``mask``. ``max`` pools
    the backbone's cell logits; ``attention`` pools its pre-logit features (timm's
    ``forward_features`` then ``forward_head(pre_logits=True)``) and applies its classifier."""
    batch, cells = mask.shape
    if crops.shape[0] != batch * cells:
        raise HPAInputError(
            f"{crops.shape[0]} cell crops for a cell_mask of {batch} bags x {cells} cells"
        )
    if pooling.mode == "max":
        return pooling(backbone(crops).reshape(batch, cells, -1), mask)
    features = backbone.forward_head(backbone.forward_features(crops), pre_logits=True)
    pooled = pooling(features.reshape(batch, cells, -1), mask)
    return backbone.get_classifier()(pooled)


def check_attention_backbone(backbone: nn.Module, name: str) -> int:
    """The pre-logit feature size of a backbone that attention MIL can pool: a timm model with
    ``forward_features``/``forward_head`` and a linear classifier. HPAInputError otherwise."""
    classifier = backbone.get_classifier() if hasattr(backbone, "get_classifier") else None
    has_head = hasattr(backbone, "forward_features") and hasattr(backbone, "forward_head")
    if not has_head or not isinstance(classifier, nn.Linear):
        raise HPAInputError(
            f"backbone {name} has no timm forward_features/forward_head with a linear "
            f"classifier (classifier: {type(classifier).__name__}); model.mil_pooling=attention "
            "pools pre-logit cell features and needs one (resnet*, densenet*, efficientnet*, "
            "convnext*...): use model.mil_pooling=max or another backbone"
        )
    return classifier.in_features


def _check_bags(cells: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The (B, N) bool mask of ``cells`` (B, N, ...); HPAInputError when its shape differs or a
    bag has no real cell."""
    if cells.ndim != 3 or mask.shape != cells.shape[:2]:
        raise HPAInputError(
            f"MIL pooling needs (bags, cells, values) and a (bags, cells) cell_mask, not "
            f"{tuple(cells.shape)} and {tuple(mask.shape)}"
        )
    mask = mask.to(device=cells.device, dtype=torch.bool)
    empty = (~mask.any(dim=1)).nonzero().flatten()
    if empty.numel():
        raise HPAInputError(
            f"bag(s) {empty.tolist()} of the batch have no real cell (cell_mask all False); "
            "every image of a MIL batch needs at least one cell crop"
        )
    return mask


MAX_POOLING = MILPooling("max")
"""Max pooling (no parameters): how a single-crop model (``mil_pooling=none``) scores bags."""
