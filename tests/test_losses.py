from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hpa.labels import KAGGLE_CLASS_COUNTS, NUM_CLASSES, NUM_KAGGLE_TRAIN_IMAGES
from hpa.models.losses import BCEWithLogitsLoss, FocalLoss, balanced_pos_weight


def random_batch(seed: int, batch_size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch_size, NUM_CLASSES, generator=generator) * 3
    targets = (torch.rand(batch_size, NUM_CLASSES, generator=generator) < 0.2).float()
    return logits, targets


def test_bce_without_pos_weight_equals_torch() -> None:
    logits, targets = random_batch(seed=0)

    loss = BCEWithLogitsLoss()(logits, targets)

    assert loss.ndim == 0
    torch.testing.assert_close(loss, F.binary_cross_entropy_with_logits(logits, targets))


def test_bce_with_explicit_pos_weight_equals_torch() -> None:
    logits, targets = random_batch(seed=1)
    pos_weight = [float(1 + class_id % 5) for class_id in range(NUM_CLASSES)]

    loss = BCEWithLogitsLoss(pos_weight=pos_weight)(logits, targets)

    expected = F.binary_cross_entropy_with_logits(
        logits, targets, pos_weight=torch.tensor(pos_weight)
    )
    torch.testing.assert_close(loss, expected)
    assert not torch.isclose(loss, F.binary_cross_entropy_with_logits(logits, targets))


def test_balanced_pos_weight_by_hand() -> None:
    weights = BCEWithLogitsLoss(pos_weight="balanced").pos_weight

    assert weights.shape == (NUM_CLASSES,)
    # Nucleoplasm: 12,885 of 31,072 images -> (31072 - 12885) / 12885.
    assert weights[0].item() == pytest.approx(18187 / 12885)
    # Cytosol: 8,228 images -> (31072 - 8228) / 8228.
    assert weights[25].item() == pytest.approx(22844 / 8228)
    # Peroxisomes (53 images) and Rods & rings (11) would be ~585 and ~2824: clipped to 10.
    assert weights[8].item() == 10.0 and weights[27].item() == 10.0
    assert KAGGLE_CLASS_COUNTS[0] == 12885 and NUM_KAGGLE_TRAIN_IMAGES == 31072


def test_balanced_pos_weight_clip_is_configurable() -> None:
    unclipped = balanced_pos_weight(max_pos_weight=None)
    assert unclipped[27].item() == pytest.approx((31072 - 11) / 11)
    clipped = BCEWithLogitsLoss(pos_weight="balanced", max_pos_weight=3.0).pos_weight
    assert clipped.max().item() == 3.0
    assert clipped[0].item() == pytest.approx(18187 / 12885)


def test_bce_balanced_pos_weight_is_used_in_the_loss() -> None:
    logits, targets = random_batch(seed=2)

    loss = BCEWithLogitsLoss(pos_weight="balanced")(logits, targets)

    expected = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=balanced_pos_weight())
    torch.testing.assert_close(loss, expected)


def test_pos_weight_is_a_buffer_outside_the_state_dict() -> None:
    loss = BCEWithLogitsLoss(pos_weight="balanced")
    assert "pos_weight" in dict(loss.named_buffers())
    assert "pos_weight" not in loss.state_dict()
    if torch.cuda.is_available():
        assert loss.to("cuda").pos_weight.device.type == "cuda"


def test_losses_work_in_a_half_precision_module() -> None:
    logits, targets = random_batch(seed=5)
    loss_fn = BCEWithLogitsLoss(pos_weight="balanced").to(torch.bfloat16)
    assert loss_fn.pos_weight.dtype == torch.bfloat16

    loss = loss_fn(logits.bfloat16(), targets.bfloat16())

    assert loss.dtype == torch.float32
    expected = F.binary_cross_entropy_with_logits(
        logits.bfloat16().float(), targets, pos_weight=balanced_pos_weight().bfloat16().float()
    )
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("bad_pos_weight", ["inverse", [1.0] * 27, [0.0] * NUM_CLASSES])
def test_bad_pos_weight_raises(bad_pos_weight: object) -> None:
    with pytest.raises(ValueError, match="pos_weight"):
        BCEWithLogitsLoss(pos_weight=bad_pos_weight)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_focal_loss_with_gamma_zero_and_no_alpha_equals_bce(seed: int) -> None:
    logits, targets = random_batch(seed)

    loss = FocalLoss(gamma=0.0, alpha=None)(logits, targets)

    assert loss.ndim == 0
    torch.testing.assert_close(loss, F.binary_cross_entropy_with_logits(logits, targets))


def test_negative_alpha_means_no_alpha_weighting() -> None:
    logits, targets = random_batch(seed=3)
    torch.testing.assert_close(FocalLoss(alpha=-1.0)(logits, targets), FocalLoss()(logits, targets))


def test_focal_loss_down_weights_easy_examples() -> None:
    targets = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    easy_logits = torch.tensor([[4.0, -4.0, 3.0, -3.0]])  # confident and right
    hard_logits = torch.tensor([[-2.0, 2.0, 0.1, -0.1]])  # wrong or unsure
    focal = FocalLoss(gamma=2.0, reduction="none")
    bce = BCEWithLogitsLoss(reduction="none")

    easy_ratio = focal(easy_logits, targets) / bce(easy_logits, targets)
    hard_ratio = focal(hard_logits, targets) / bce(hard_logits, targets)

    # The factor (1 - p_t) ** 2 is under 0.003 for p_t > 0.95 but about 0.8 for a wrong p_t of 0.12.
    assert (easy_ratio < 0.003).all()
    assert (hard_ratio > 0.2).all()
    assert (focal(easy_logits, targets) < bce(easy_logits, targets)).all()


def test_focal_loss_alpha_weighs_positives_and_negatives() -> None:
    targets = torch.tensor([[1.0, 0.0]])
    logits = torch.tensor([[0.0, 0.0]])  # p = 0.5 for both: equal unweighted losses

    loss = FocalLoss(gamma=2.0, alpha=0.25, reduction="none")(logits, targets)

    unweighted = FocalLoss(gamma=2.0, alpha=None, reduction="none")(logits, targets)
    torch.testing.assert_close(loss, unweighted * torch.tensor([[0.25, 0.75]]))


def test_losses_accept_half_precision_logits() -> None:
    logits, targets = random_batch(seed=4)
    for loss_fn in (BCEWithLogitsLoss(pos_weight="balanced"), FocalLoss()):
        loss = loss_fn(logits.half(), targets)
        assert loss.dtype == torch.float32
        torch.testing.assert_close(loss, loss_fn(logits.half().float(), targets))
