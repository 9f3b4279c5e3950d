"""Multiple-instance pooling over an image's cell crops (hpa.models.mil, ``model.mil_pooling``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from hpa.core.errors import HPAInputError
from hpa.core.labels import HPA2018
from hpa.core.metric_names import TRAIN_LOSS, VAL_LOSS
from hpa.models.mil import MILPooling
from hpa.models.module import HPAModule

CROP = 32  # resnet18 cell crops: a 1 x 1 feature map
CELLS = 3  # bag size after padding


class RandomBags(Dataset):
    """Bags of random uint8 cell crops, padded to ``CELLS`` (bag ``i`` has 1 + i % CELLS real
    cells), each with ~20% positive image labels."""

    def __init__(self, count: int) -> None:
        generator = torch.Generator().manual_seed(0)
        shape = (count, CELLS, 4, CROP, CROP)
        self.images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
        self.targets = (torch.rand(count, HPA2018.num_classes, generator=generator) < 0.2).float()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {
            "image": self.images[index],
            "cell_mask": torch.arange(CELLS) <= index % CELLS,
            "target": self.targets[index],
            "index": torch.tensor(index),
        }


def bag_loader(count: int = 4) -> DataLoader:
    return DataLoader(RandomBags(count), batch_size=2)


def cpu_trainer(tmp_path: Path, **kwargs) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
        **kwargs,
    )


def test_max_pooling_ignores_padding():
    cell_logits = torch.tensor(
        [
            [[1.0, -2.0], [0.5, 3.0], [1e6, 1e6]],  # its third cell is padding
            [[-4.0, -5.0], [9e5, 9e5], [-1.0, -6.0]],  # its second cell is padding
        ]
    )
    mask = torch.tensor([[True, True, False], [True, False, True]])
    pooled = MILPooling("max")(cell_logits, mask)
    assert torch.equal(pooled, torch.tensor([[1.0, 3.0], [-1.0, -5.0]]))


def test_a_bag_without_cells_is_refused():
    with pytest.raises(HPAInputError, match=r"bag\(s\) \[1\] .*no real cell"):
        MILPooling("max")(
            torch.zeros(2, 3, 5), torch.tensor([[True, False, False], [False, False, False]])
        )
    with pytest.raises(HPAInputError, match="cell_mask"):
        MILPooling("max")(torch.zeros(2, 3, 5), torch.ones(2, 4, dtype=torch.bool))


def test_attention_weights_sum_to_one_over_real_cells_and_are_zero_on_padding():
    torch.manual_seed(0)
    pooling = MILPooling("attention", num_features=6, attention_dim=4)
    features = torch.randn(2, 4, 6)
    mask = torch.tensor([[True, False, True, False], [True, True, True, True]])
    weights = pooling.attention_weights(features, mask)
    assert weights.shape == (2, 4)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(2))
    assert torch.all(weights[~mask] == 0) and torch.all(weights[mask] > 0)

    pooled = pooling(features, mask)
    torch.testing.assert_close(pooled, torch.einsum("bn,bnk->bk", weights, features))
    # padding's features change nothing
    moved = features.clone()
    moved[~mask] = 1e4
    torch.testing.assert_close(pooling(moved, mask), pooled)
    # through a linear classifier: the weighted mean of the cells' own logits
    classifier = torch.nn.Linear(6, 3)
    cell_logits = classifier(features)
    torch.testing.assert_close(classifier(pooled), torch.einsum("bn,bnc->bc", weights, cell_logits))


def test_unknown_modes_and_backbones_attention_cannot_pool_are_refused():
    with pytest.raises(HPAInputError, match=r"mil_pooling='mean' is not one of none, max, att"):
        HPAModule("resnet18", mil_pooling="mean")
    with pytest.raises(HPAInputError, match="seed_cnn has no timm forward_features"):
        HPAModule("seed_cnn", mil_pooling="attention")
    with pytest.raises(HPAInputError, match="train on different batches"):
        HPAModule("resnet18", mil_pooling="max", map_consistency=1.0)
    assert HPAModule("seed_cnn", mil_pooling="max").bag_pooling.mode == "max"
    assert HPAModule("resnet18").bag_pooling is None


def test_a_single_crop_model_trains_on_crops_only_and_scores_bags_by_their_best_cell(
    tmp_path: Path,
):
    torch.manual_seed(0)
    module = HPAModule("resnet18")  # mil_pooling=none
    with pytest.raises(HPAInputError, match="needs model.mil_pooling=max or attention"):
        cpu_trainer(tmp_path, max_steps=1, limit_val_batches=0).fit(module, bag_loader(2))

    bags = RandomBags(4)
    crops = DataLoader(
        [
            {"image": image, "target": target}
            for image, target in zip(bags.images[:, 0], bags.targets, strict=True)
        ],
        batch_size=2,
    )
    trainer = cpu_trainer(tmp_path, max_epochs=1, limit_val_batches=1)
    trainer.fit(module, train_dataloaders=crops, val_dataloaders=bag_loader(2))
    assert torch.isfinite(trainer.callback_metrics[VAL_LOSS])

    module.eval()
    batch = next(iter(bag_loader(2)))  # bag 0: one real cell, bag 1: two
    with torch.no_grad():
        cells = module(batch["image"].flatten(0, 1)).reshape(2, CELLS, -1)
        expected = torch.stack([cells[0, 0], cells[1, :2].amax(dim=0)])
        torch.testing.assert_close(module._logits(batch), expected)


@pytest.mark.parametrize("mode", ["max", "attention"])
def test_a_module_trains_on_bags_and_scores_single_crops(mode: str, tmp_path: Path):
    torch.manual_seed(0)
    module = HPAModule("resnet18", mil_pooling=mode, mil_attention_dim=16, channels_last=True)
    before = {name: value.detach().clone() for name, value in module.named_parameters()}
    trainer = cpu_trainer(tmp_path, max_steps=2, limit_val_batches=1)
    trainer.fit(module, train_dataloaders=bag_loader(), val_dataloaders=bag_loader(2))

    assert trainer.global_step == 2
    logged = trainer.callback_metrics
    assert torch.isfinite(logged[f"{TRAIN_LOSS}_step"]) and torch.isfinite(logged[VAL_LOSS])
    attention = [name for name in before if name.startswith("bag_pooling.")]
    assert bool(attention) == (mode == "attention")
    for name in attention:  # the attention layers are the module's and learn
        assert not torch.equal(before[name], module.get_parameter(name)), name
    if attention:
        checkpoint = tmp_path / "bags.ckpt"
        trainer.save_checkpoint(checkpoint)
        loaded = HPAModule.load_from_checkpoint(checkpoint)
        assert torch.equal(
            loaded.bag_pooling.attention_w.weight, module.bag_pooling.attention_w.weight
        )

    module.eval()
    crops = RandomBags(2).images[:, 0]  # (2, 4, s, s) single cell crops
    with torch.no_grad():
        assert module(crops).shape == (2, HPA2018.num_classes)
        # a bag of one cell is that cell's own logits
        bags = {"image": crops[:, None], "cell_mask": torch.ones(2, 1, dtype=torch.bool)}
        torch.testing.assert_close(module._logits(bags), module(crops))

    trainer.test(module, bag_loader(2), verbose=False)
    rows, probabilities = module.collected_test_predictions()
    assert rows.tolist() == [0, 1] and probabilities.shape == (2, HPA2018.num_classes)
