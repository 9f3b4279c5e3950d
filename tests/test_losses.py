from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.errors import InstantiationException
from test_configs import compose_train, group_options, resolved
from torch.utils.data import DataLoader

from hpa.core.errors import HPAInputError
from hpa.core.labels import HPA2018
from hpa.core.metric_names import TRAIN_LOSS
from hpa.data.class_statistics import ClassStatistics
from hpa.data.dataset import collate_samples
from hpa.data.synthetic.labels import KAGGLE_CLASS_COUNTS, NUM_KAGGLE_TRAIN_IMAGES
from hpa.models.losses import (
    BCEWithLogitsLoss,
    FocalLoss,
    LovaszHingeLoss,
    OHEMBCELoss,
    WeightedSum,
    balanced_pos_weight,
    lovasz_hinge_per_class,
)
from hpa.models.module import HPAModule
from hpa.run.builders import with_train_class_counts

# the real Kaggle 2018 train.csv counts, as a train split of that size would give them
KAGGLE_COUNTS = {"class_counts": KAGGLE_CLASS_COUNTS, "num_images": NUM_KAGGLE_TRAIN_IMAGES}
KAGGLE_STATISTICS = ClassStatistics(
    HPA2018, np.asarray(KAGGLE_CLASS_COUNTS), NUM_KAGGLE_TRAIN_IMAGES
)


def module_of(loss: dict) -> HPAModule:
    """The seed CNN with ``loss``, its balanced weights from the Kaggle counts, as
    ``hpa.run.builders.build_module`` passes a train split's."""
    return HPAModule(name="seed_cnn", loss=with_train_class_counts(loss, KAGGLE_STATISTICS))


def random_batch(seed: int, batch_size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch_size, HPA2018.num_classes, generator=generator) * 3
    targets = (torch.rand(batch_size, HPA2018.num_classes, generator=generator) < 0.2).float()
    return logits, targets


def test_bce_without_pos_weight_equals_torch() -> None:
    logits, targets = random_batch(seed=0)

    loss = BCEWithLogitsLoss()(logits, targets)

    assert loss.ndim == 0
    torch.testing.assert_close(loss, F.binary_cross_entropy_with_logits(logits, targets))


def test_bce_with_explicit_pos_weight_equals_torch() -> None:
    logits, targets = random_batch(seed=1)
    pos_weight = [float(1 + class_id % 5) for class_id in range(HPA2018.num_classes)]

    loss = BCEWithLogitsLoss(pos_weight=pos_weight)(logits, targets)

    expected = F.binary_cross_entropy_with_logits(
        logits, targets, pos_weight=torch.tensor(pos_weight)
    )
    torch.testing.assert_close(loss, expected)
    assert not torch.isclose(loss, F.binary_cross_entropy_with_logits(logits, targets))


def test_balanced_pos_weight_by_hand() -> None:
    weights = BCEWithLogitsLoss(**KAGGLE_COUNTS, pos_weight="balanced").pos_weight

    assert weights.shape == (HPA2018.num_classes,)
    # Nucleoplasm: 12,885 of 31,072 images -> (31072 - 12885) / 12885.
    assert weights[0].item() == pytest.approx(18187 / 12885)
    # Cytosol: 8,228 images -> (31072 - 8228) / 8228.
    assert weights[25].item() == pytest.approx(22844 / 8228)
    # Peroxisomes (53 images) and Rods & rings (11) would be ~585 and ~2824: clipped to 10.
    assert weights[8].item() == 10.0 and weights[27].item() == 10.0
    assert KAGGLE_CLASS_COUNTS[0] == 12885 and NUM_KAGGLE_TRAIN_IMAGES == 31072


def test_balanced_pos_weight_clip_is_configurable() -> None:
    unclipped = balanced_pos_weight(**KAGGLE_COUNTS, max_pos_weight=None)
    assert unclipped[27].item() == pytest.approx((31072 - 11) / 11)
    clipped = BCEWithLogitsLoss(
        **KAGGLE_COUNTS, pos_weight="balanced", max_pos_weight=3.0
    ).pos_weight
    assert clipped.max().item() == 3.0
    assert clipped[0].item() == pytest.approx(18187 / 12885)


def test_bce_balanced_pos_weight_is_used_in_the_loss() -> None:
    logits, targets = random_batch(seed=2)

    loss = BCEWithLogitsLoss(**KAGGLE_COUNTS, pos_weight="balanced")(logits, targets)

    expected = F.binary_cross_entropy_with_logits(
        logits, targets, pos_weight=balanced_pos_weight(**KAGGLE_COUNTS)
    )
    torch.testing.assert_close(loss, expected)


def test_pos_weight_is_a_buffer_outside_the_state_dict() -> None:
    loss = BCEWithLogitsLoss(**KAGGLE_COUNTS, pos_weight="balanced")
    assert "pos_weight" in dict(loss.named_buffers())
    assert "pos_weight" not in loss.state_dict()
    if torch.cuda.is_available():
        assert loss.to("cuda").pos_weight.device.type == "cuda"


def test_losses_work_in_a_half_precision_module() -> None:
    logits, targets = random_batch(seed=5)
    loss_fn = BCEWithLogitsLoss(**KAGGLE_COUNTS, pos_weight="balanced").to(torch.bfloat16)
    assert loss_fn.pos_weight.dtype == torch.bfloat16

    loss = loss_fn(logits.bfloat16(), targets.bfloat16())

    assert loss.dtype == torch.float32
    expected = F.binary_cross_entropy_with_logits(
        logits.bfloat16().float(),
        targets,
        pos_weight=balanced_pos_weight(**KAGGLE_COUNTS).bfloat16().float(),
    )
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("bad_pos_weight", ["inverse", [], [0.0] * HPA2018.num_classes])
def test_bad_pos_weight_raises(bad_pos_weight: object) -> None:
    with pytest.raises(ValueError, match="pos_weight"):
        BCEWithLogitsLoss(pos_weight=bad_pos_weight)


def test_balanced_pos_weight_needs_the_train_split_counts() -> None:
    with pytest.raises(ValueError, match="class_counts and num_images"):
        BCEWithLogitsLoss(pos_weight="balanced")


def test_pos_weight_of_another_number_of_classes_is_refused_by_the_module() -> None:
    loss = {"_target_": "hpa.models.losses.BCEWithLogitsLoss", "pos_weight": [1.0] * 27}
    with pytest.raises(HPAInputError, match="27 values; the label set hpa2018 has 28 classes"):
        HPAModule(name="seed_cnn", loss=loss)


def test_balanced_weights_of_absent_and_universal_classes_are_defined() -> None:
    weights = balanced_pos_weight([0, 5, 20, 10], num_images=20, max_pos_weight=10.0)
    # no positive: the clip value; every image: 1; otherwise (N - n) / n
    assert weights.tolist() == pytest.approx([10.0, 3.0, 1.0, 1.0])
    assert balanced_pos_weight([0, 4], num_images=8, max_pos_weight=None).tolist() == [1.0, 1.0]


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
    for loss_fn in (BCEWithLogitsLoss(**KAGGLE_COUNTS, pos_weight="balanced"), FocalLoss()):
        loss = loss_fn(logits.half(), targets)
        assert loss.dtype == torch.float32
        torch.testing.assert_close(loss, loss_fn(logits.half().float(), targets))


# --- Lovasz hinge ----------------------------------------------------------------------------


def jaccard_loss(mispredicted: set[int], targets: list[int]) -> float:
    """1 - IoU of a column's prediction when the elements ``mispredicted`` are wrong."""
    positives = {i for i, target in enumerate(targets) if target == 1}
    union = positives | mispredicted  # the positives and the false positives
    if not union:
        return 0.0
    return 1.0 - len(positives - mispredicted) / len(union)


def lovasz_hinge_by_level_sets(logits: list[float], targets: list[int]) -> float:
    """The Lovasz extension of ``jaccard_loss`` at the hinge errors m, from its definition as
    the integral over t > 0 of jaccard_loss({i : m_i > t}), which is constant between levels."""
    errors = [
        max(0.0, 1.0 - logit * (2 * target - 1))
        for logit, target in zip(logits, targets, strict=True)
    ]
    levels = sorted({0.0, *errors})
    return sum(
        (high - low) * jaccard_loss({i for i, e in enumerate(errors) if e > low}, targets)
        for low, high in itertools.pairwise(levels)
    )


def test_lovasz_hinge_of_one_column_by_hand() -> None:
    # hinge errors 1 - logit * sign: 0.5 (positive), 1.5 (positive), 1.0 (negative). In
    # decreasing order the mispredicted set grows {1} -> {1, 2} -> {1, 2, 0} with Jaccard losses
    # 1 - 1/2, 1 - 1/3 and 1 - 0/3: 1.5 * 1/2 + 1.0 * (2/3 - 1/2) + 0.5 * (1 - 2/3) = 13/12.
    logits = torch.tensor([[0.5], [-0.5], [0.0]])
    targets = torch.tensor([[1.0], [1.0], [0.0]])
    torch.testing.assert_close(lovasz_hinge_per_class(logits, targets), torch.tensor([13 / 12]))
    # Negated with flipped targets: the same errors, one positive (row 2) and the sets' Jaccard
    # losses 1/2, 1, 1: 1.5 * 1/2 + 1.0 * 1/2 + 0 = 5/4. The symmetric loss is their mean.
    torch.testing.assert_close(lovasz_hinge_per_class(-logits, 1 - targets), torch.tensor([1.25]))
    symmetric = LovaszHingeLoss(symmetric=True)(logits, targets)
    torch.testing.assert_close(symmetric, torch.tensor((13 / 12 + 5 / 4) / 2))


def test_lovasz_hinge_averages_the_classes_and_charges_a_class_without_positives() -> None:
    # column 1 has no positive: any false positive costs a Jaccard loss of 1, so the column's
    # loss is its largest hinge error, 1 + 0.5
    logits = torch.tensor([[0.5, -2.0], [-0.5, 0.5], [0.0, -0.5]])
    targets = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    per_class = lovasz_hinge_per_class(logits, targets)
    torch.testing.assert_close(per_class, torch.tensor([13 / 12, 1.5]))
    loss = LovaszHingeLoss(symmetric=False)(logits, targets)
    torch.testing.assert_close(loss, per_class.mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lovasz_hinge_equals_the_lovasz_extension_by_brute_force(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(7, 6, generator=generator, dtype=torch.float64) * 2
    targets = (torch.rand(7, 6, generator=generator) < 0.3).double()
    targets[:, 0] = 0.0  # a class absent from the batch
    targets[:, 1] = 1.0  # a class in every image

    columns = [(logits[:, c].tolist(), targets[:, c].int().tolist()) for c in range(6)]
    expected = torch.tensor([lovasz_hinge_by_level_sets(x, y) for x, y in columns])
    torch.testing.assert_close(lovasz_hinge_per_class(logits, targets), expected.double())

    flipped = [lovasz_hinge_by_level_sets([-v for v in x], [1 - t for t in y]) for x, y in columns]
    symmetric = ((expected + torch.tensor(flipped)) / 2).mean()
    torch.testing.assert_close(LovaszHingeLoss()(logits, targets), symmetric.float())


def test_lovasz_hinge_is_zero_when_every_margin_is_met() -> None:
    _, targets = random_batch(seed=6)
    logits = 3.0 * (2 * targets - 1)  # every element on its right side with margin > 1
    assert LovaszHingeLoss()(logits, targets).item() == 0.0


# --- hard-negative BCE -----------------------------------------------------------------------


def test_ohem_keeps_the_positives_and_the_hardest_half_of_the_negatives() -> None:
    # negatives' logits -1, 0.5, -3, 1: ceil(0.5 * 4) = 2 kept, those of logits 1 and 0.5
    logits = torch.tensor([[2.0], [-1.0], [0.5], [-3.0], [1.0]])
    targets = torch.tensor([[1.0], [0.0], [0.0], [0.0], [0.0]])
    loss = OHEMBCELoss(negative_fraction=0.5)(logits, targets)
    expected = (
        F.softplus(torch.tensor(-2.0))
        + F.softplus(torch.tensor(1.0))
        + F.softplus(torch.tensor(0.5))
    ) / 3
    torch.testing.assert_close(loss, expected)

    # a quarter of 4 negatives: the hardest one alone
    loss = OHEMBCELoss(negative_fraction=0.25)(logits, targets)
    torch.testing.assert_close(
        loss, (F.softplus(torch.tensor(-2.0)) + F.softplus(torch.tensor(1.0))) / 2
    )


def test_ohem_averages_per_class_and_with_every_negative_equals_bce() -> None:
    logits, targets = random_batch(seed=7)
    torch.testing.assert_close(
        OHEMBCELoss(negative_fraction=1.0)(logits, targets),
        F.binary_cross_entropy_with_logits(logits, targets),
    )
    # class 0 all positive (nothing mined), class 1 all negative (half of them kept)
    logits = torch.tensor([[1.0, 4.0], [-1.0, 3.0], [0.0, -2.0], [2.0, -5.0]])
    targets = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    first = F.binary_cross_entropy_with_logits(logits[:, 0], targets[:, 0])
    second = (F.softplus(torch.tensor(4.0)) + F.softplus(torch.tensor(3.0))) / 2
    torch.testing.assert_close(OHEMBCELoss()(logits, targets), (first + second) / 2)


def test_ohem_sends_no_gradient_to_the_easy_negatives() -> None:
    logits = torch.tensor([[2.0], [-1.0], [0.5], [-3.0], [1.0]], requires_grad=True)
    targets = torch.tensor([[1.0], [0.0], [0.0], [0.0], [0.0]])
    OHEMBCELoss(negative_fraction=0.5)(logits, targets).backward()
    gradient = logits.grad.squeeze(1)
    assert gradient[1] == 0 and gradient[3] == 0  # the easy negatives, dropped
    assert gradient[0] < 0 and gradient[2] > 0 and gradient[4] > 0


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5])
def test_ohem_rejects_a_bad_fraction(fraction: float) -> None:
    with pytest.raises(ValueError, match="negative_fraction"):
        OHEMBCELoss(negative_fraction=fraction)


# --- weighted sums ---------------------------------------------------------------------------


def test_weighted_sum_is_the_sum_of_the_weighted_terms() -> None:
    logits, targets = random_batch(seed=8)
    focal, lovasz = FocalLoss(), LovaszHingeLoss()
    loss = WeightedSum({"focal": focal, "lovasz": lovasz}, {"focal": 2.0, "lovasz": 0.5})
    expected = 2.0 * focal(logits, targets) + 0.5 * lovasz(logits, targets)
    torch.testing.assert_close(loss(logits, targets), expected)
    without_lovasz = WeightedSum({"focal": focal, "lovasz": lovasz}, {"focal": 2.0, "lovasz": 0})
    torch.testing.assert_close(without_lovasz(logits, targets), 2.0 * focal(logits, targets))


@pytest.mark.parametrize(
    "weights,message",
    [
        ({"focal": 1.0}, "must name the loss terms"),
        ({"focal": 1.0, "lovasz": 1.0, "dice": 1.0}, "must name the loss terms"),
        ({"focal": 1.0, "lovasz": -1.0}, ">= 0"),
        ({"focal": 0.0, "lovasz": 0.0}, "not all 0"),
        ({"focal": 1.0, "lovasz": math.nan}, "finite"),
    ],
)
def test_weighted_sum_rejects_bad_weights(weights: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WeightedSum({"focal": FocalLoss(), "lovasz": LovaszHingeLoss()}, weights)


def test_weighted_sum_rejects_an_unreduced_term() -> None:
    loss = WeightedSum({"bce": BCEWithLogitsLoss(reduction="none")}, {"bce": 1.0})
    with pytest.raises(ValueError, match="'bce' must reduce to a scalar"):
        loss(*random_batch(seed=9))


@pytest.mark.parametrize(
    "loss_fn",
    [
        LovaszHingeLoss(),
        LovaszHingeLoss(symmetric=False),
        OHEMBCELoss(),
        WeightedSum(
            {"focal": FocalLoss(), "lovasz": LovaszHingeLoss()}, {"focal": 14, "lovasz": 1}
        ),
    ],
    ids=["lovasz", "lovasz_one_sided", "ohem", "focal_lovasz"],
)
def test_gradients_are_finite_and_reach_every_class(loss_fn) -> None:
    logits, targets = random_batch(seed=10, batch_size=16)
    logits.requires_grad_(True)
    loss = loss_fn(logits, targets)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss) and loss > 0
    assert torch.isfinite(logits.grad).all()
    assert (logits.grad.abs().sum(dim=0) > 0).all()  # every class's column gets a gradient


def test_new_losses_accept_half_precision_logits() -> None:
    logits, targets = random_batch(seed=11)
    for loss_fn in (LovaszHingeLoss(), OHEMBCELoss()):
        loss = loss_fn(logits.bfloat16(), targets.bfloat16())
        assert loss.dtype == torch.float32
        torch.testing.assert_close(loss, loss_fn(logits.bfloat16().float(), targets))


# --- the configs, through Hydra and the real module --------------------------------------------


def composed_loss(tmp_path: Path, *overrides: str) -> dict:
    """The loss group of the composed train config, resolved, as build_module passes it."""
    return resolved(compose_train(list(overrides), tmp_path))["loss"]


def test_focal_lovasz_weights_are_overridable(tmp_path: Path) -> None:
    loss = composed_loss(
        tmp_path, "loss=focal_lovasz", "loss.weights.focal=1", "loss.weights.lovasz=0.5"
    )
    criterion = HPAModule(name="seed_cnn", loss=loss).criterion

    assert isinstance(criterion, WeightedSum)
    assert criterion.weights == {"focal": 1.0, "lovasz": 0.5}
    assert isinstance(criterion.terms["focal"], FocalLoss)
    assert isinstance(criterion.terms["lovasz"], LovaszHingeLoss)
    logits, targets = random_batch(seed=12)
    expected = FocalLoss()(logits, targets) + 0.5 * LovaszHingeLoss()(logits, targets)
    torch.testing.assert_close(criterion(logits, targets), expected)


def test_a_term_can_be_added_from_the_command_line(tmp_path: Path) -> None:
    loss = composed_loss(
        tmp_path,
        "loss=focal_lovasz",
        "+loss.terms.bce={_target_:hpa.models.losses.BCEWithLogitsLoss,pos_weight:balanced}",
        "+loss.weights.bce=0.25",
    )
    criterion = module_of(loss).criterion
    assert criterion.weights == {"focal": 14.0, "lovasz": 0.5, "bce": 0.25}
    torch.testing.assert_close(
        criterion.terms["bce"].pos_weight, balanced_pos_weight(**KAGGLE_COUNTS)
    )


def test_bestfitting_mix_composes(tmp_path: Path) -> None:
    criterion = HPAModule(name="seed_cnn", loss=composed_loss(tmp_path, "loss=focal_lovasz_ohem"))
    assert criterion.criterion.weights == {"focal": 14.0, "lovasz": 0.5, "ohem": 0.5}
    assert isinstance(criterion.criterion.terms["ohem"], OHEMBCELoss)


def test_a_weight_for_a_missing_term_stops_before_training(tmp_path: Path) -> None:
    loss = composed_loss(tmp_path, "loss=focal_lovasz", "+loss.weights.dice=1")
    # Hydra wraps the loss's ValueError, message included
    with pytest.raises(InstantiationException, match=r"\['dice', 'focal', 'lovasz'\] must name"):
        HPAModule(name="seed_cnn", loss=loss)


def tiny_loader(num_batches: int = 1, batch_size: int = 8, seed: int = 0, **kwargs) -> DataLoader:
    """Random uint8 RGBY images (32 x 32) with ~20% positive labels, batched like the datamodule's."""
    generator = torch.Generator().manual_seed(seed)
    items = [
        {
            "image": torch.randint(0, 256, (4, 32, 32), dtype=torch.uint8, generator=generator),
            "target": (torch.rand(HPA2018.num_classes, generator=generator) < 0.2).float(),
            "index": torch.tensor(index),
        }
        for index in range(num_batches * batch_size)
    ]
    return DataLoader(items, batch_size=batch_size, collate_fn=collate_samples, **kwargs)


def cpu_trainer(tmp_path: Path, **kwargs) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        **kwargs,
    )


@pytest.mark.parametrize("option", group_options("loss"))
def test_one_training_step_with_each_loss(option: str, tmp_path: Path) -> None:
    module = module_of(composed_loss(tmp_path, f"loss={option}"))
    before = {name: value.clone() for name, value in module.named_parameters()}
    trainer = cpu_trainer(tmp_path, max_steps=1, limit_val_batches=0, enable_checkpointing=False)

    trainer.fit(module, train_dataloaders=tiny_loader())

    assert trainer.global_step == 1
    loss = trainer.callback_metrics[f"{TRAIN_LOSS}_step"]
    assert torch.isfinite(loss) and loss > 0
    changed = [not torch.equal(before[name], value) for name, value in module.named_parameters()]
    assert all(changed), f"{option}: {changed.count(False)} parameters did not move"
