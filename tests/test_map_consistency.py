"""Puzzle-CAM map consistency (hpa.models.map_consistency, ``model.map_consistency``)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from test_configs import compose_train
from torch.utils.data import DataLoader

from hpa.core.errors import HPAInputError
from hpa.core.labels import HPA2018
from hpa.core.metric_names import TRAIN_LOSS
from hpa.models.map_consistency import (
    PUZZLE_IMAGE_LOSS,
    PUZZLE_L1,
    PUZZLE_TILE_LOSS,
    check_tiles,
    class_maps,
    gap_linear_head,
    puzzle_losses,
    reassemble_tiles,
    split_tiles,
)
from hpa.models.module import HPAModule
from hpa.run.preflight import check_run_config

SIZE = 64  # resnet18: a 2 x 2 feature map, each 32 px piece 1 x 1


def random_batches(count: int, size: int = SIZE, batch_size: int = 4) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    return [
        {
            "image": torch.randint(0, 256, (4, size, size), dtype=torch.uint8, generator=generator),
            "target": (torch.rand(HPA2018.num_classes, generator=generator) < 0.2).float(),
            "index": torch.tensor(index),
        }
        for index in range(count * batch_size)
    ]


def loader(count: int, size: int = SIZE) -> DataLoader:
    return DataLoader(random_batches(count, size), batch_size=4)


def cpu_trainer(tmp_path: Path, max_steps: int) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=max_steps,
        limit_val_batches=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
    )


def resnet(**hparams) -> HPAModule:
    torch.manual_seed(0)
    return HPAModule("resnet18", channel_mean=(0.1, 0.2, 0.3, 0.4), **hparams)


def test_split_then_reassemble_is_the_identity_in_row_major_order():
    images = torch.randn(2, 4, 6, 6)
    pieces = split_tiles(images, 3)
    assert pieces.shape == (18, 4, 2, 2)
    # image 1's piece (row 0, col 2) is its top-right corner
    assert torch.equal(pieces[9 + 2], images[1, :, 0:2, 4:6])
    assert torch.equal(pieces[4], images[0, :, 2:4, 2:4])
    assert torch.equal(reassemble_tiles(pieces, 3), images)
    channels_last = images.contiguous(memory_format=torch.channels_last)
    assert torch.equal(reassemble_tiles(split_tiles(channels_last, 3), 3), images)


def test_an_image_size_the_tiles_do_not_divide_names_sizes_that_work():
    with pytest.raises(HPAInputError, match=r"100 is not divisible by 3.*\(e\.g\. 99 or 102"):
        split_tiles(torch.zeros(1, 4, 100, 100), 3)
    with pytest.raises(HPAInputError, match="integer of at least 2"):
        check_tiles(64, 1)
    check_tiles(512, 2)


def test_class_maps_average_to_the_logits_of_a_gap_linear_head():
    backbone = resnet().backbone.eval()
    images = torch.randn(2, 4, SIZE, SIZE)
    _, classifier = gap_linear_head(backbone, "resnet18", "test")
    with torch.no_grad():
        maps = class_maps(backbone.forward_features(images), classifier)
        assert maps.shape == (2, HPA2018.num_classes, 2, 2)
        torch.testing.assert_close(maps.mean(dim=(2, 3)), backbone(images), rtol=1e-4, atol=1e-4)


def test_puzzle_losses_of_pieces_that_are_the_image_are_zero_l1():
    """A 1 x 1 feature map per piece that is exactly the whole image's map at its position."""
    classifier = torch.nn.Linear(8, 3)
    features = torch.randn(2, 8, 2, 2)
    pieces = split_tiles(features, 2)  # (8, 8, 1, 1): each piece the image map's position
    criterion = torch.nn.BCEWithLogitsLoss()
    target = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    losses = puzzle_losses(features, pieces, classifier, 2, target, criterion)
    assert losses.consistency.item() == pytest.approx(0.0, abs=1e-6)
    image_logits = classifier(features.mean(dim=(2, 3)))
    torch.testing.assert_close(losses.tile_logits, image_logits)
    torch.testing.assert_close(losses.tile_loss, criterion(image_logits, target))
    # the consistency compares the maps after a ReLU: only positive evidence differs
    shifted = puzzle_losses(features, pieces + 1.0, classifier, 2, target, criterion)
    maps = class_maps(features, classifier)
    moved = reassemble_tiles(class_maps(pieces + 1.0, classifier), 2)
    expected = (maps.relu() - moved.relu()).abs().mean()
    torch.testing.assert_close(shifted.consistency, expected)


def test_maps_that_do_not_reassemble_to_the_image_map_are_refused():
    backbone = resnet().backbone.eval()
    images = torch.zeros(1, 4, 96, 96)  # 3 x 3 map; its 48 px pieces 2 x 2 each
    _, classifier = gap_linear_head(backbone, "resnet18", "test")
    with torch.no_grad(), pytest.raises(HPAInputError, match=r"\(4, 4\).*\(3, 3\).*multiple of 2"):
        puzzle_losses(
            backbone.forward_features(images),
            backbone.forward_features(split_tiles(images, 2)),
            classifier,
            2,
            torch.zeros(1, HPA2018.num_classes),
            torch.nn.BCEWithLogitsLoss(),
        )


def test_without_map_consistency_the_loss_is_the_plain_criterion(tmp_path: Path):
    module = resnet()
    assert module.hparams.map_consistency == 0.0
    batch = next(iter(loader(1)))
    reference = copy.deepcopy(module).train()
    with torch.no_grad():
        expected = reference.criterion(reference(batch["image"]), batch["target"])
    trainer = cpu_trainer(tmp_path, max_steps=1)
    trainer.fit(module, train_dataloaders=loader(1))
    logged = trainer.callback_metrics
    torch.testing.assert_close(logged[f"{TRAIN_LOSS}_step"], expected)
    assert not any(name.startswith("train/puzzle") for name in logged)


def test_map_consistency_trains_and_logs_its_parts(tmp_path: Path):
    module = resnet(map_consistency=0.5, channels_last=True)
    batch = next(iter(loader(1)))
    reference = copy.deepcopy(module).train()
    with torch.no_grad():
        plain = reference.criterion(reference(batch["image"]), batch["target"])
    trainer = cpu_trainer(tmp_path, max_steps=2)
    trainer.fit(module, train_dataloaders=loader(2))

    assert trainer.global_step == 2
    logged = {name: value.item() for name, value in trainer.callback_metrics.items()}
    # the image term is the plain forward's loss (same normalisation): compare at step 1
    epoch_mean = logged[f"{PUZZLE_IMAGE_LOSS}_epoch"]
    assert epoch_mean == pytest.approx((plain.item() + logged[f"{PUZZLE_IMAGE_LOSS}_step"]) / 2)
    parts = [logged[f"{name}_step"] for name in (PUZZLE_IMAGE_LOSS, PUZZLE_TILE_LOSS, PUZZLE_L1)]
    assert all(torch.isfinite(torch.tensor(part)) for part in parts)
    assert parts[2] > 0
    total = parts[0] + parts[1] + 0.5 * parts[2]
    assert logged[f"{TRAIN_LOSS}_step"] == pytest.approx(total, rel=1e-5)


def test_tiles_that_do_not_divide_the_training_images_stop_the_fit(tmp_path: Path):
    module = resnet(map_consistency=1.0, map_consistency_tiles=3)
    with pytest.raises(HPAInputError, match="64 is not divisible by 3"):
        cpu_trainer(tmp_path, max_steps=1).fit(module, train_dataloaders=loader(1))


def test_a_backbone_without_a_gap_linear_head_is_refused_at_construction():
    with pytest.raises(HPAInputError, match=r"seed_cnn has no global-average-pool.*map_consist"):
        HPAModule("seed_cnn", map_consistency=1.0)
    with pytest.raises(HPAInputError, match="convnext_atto has no global-average-pool"):
        HPAModule("convnext_atto", map_consistency=1.0)
    with pytest.raises(HPAInputError, match="0 \\(off\\) or positive"):
        HPAModule("resnet18", map_consistency=-1.0)
    with pytest.raises(HPAInputError, match="at least 2"):
        HPAModule("resnet18", map_consistency=1.0, map_consistency_tiles=1)
    HPAModule("seed_cnn")  # off: any backbone


def test_the_override_reaches_the_module_and_preflight_refuses_the_seed_cnn(tmp_path: Path):
    cfg = compose_train(["model=resnet18", "model.map_consistency=1.0"], tmp_path)
    assert cfg.model.map_consistency == 1.0 and cfg.model.map_consistency_tiles == 2
    check_run_config(cfg)
    cfg = compose_train(["model=cnn", "model.map_consistency=1.0"], tmp_path)
    with pytest.raises(HPAInputError, match="seed_cnn has no global-average-pool"):
        check_run_config(cfg)
