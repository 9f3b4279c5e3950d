"""One training epoch of hpa.train's LightningModule and Trainer against a plain PyTorch loop:
same model, batch size, image size, optimizer, threads and the same in-memory data (the train
split of the synthetic default, decoded once).

    python -m benchmarks.train [--images N] [--rounds 1] [--datamodule]
"""

from __future__ import annotations

import argparse

import numpy as np
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from torch.utils.data import DataLoader, Dataset

from benchmarks.common import print_table, synthetic_default_root, time_it, train_config
from hpa.run import builders

TRAINER_OVERRIDES = (
    "trainer.max_epochs=1",
    "trainer.accelerator=cpu",
    "+trainer.limit_val_batches=0",
    "+trainer.num_sanity_val_steps=0",
    "+trainer.enable_checkpointing=false",
    "+trainer.enable_progress_bar=false",
    "+trainer.enable_model_summary=false",
    "callbacks=none",
    "logger=none",
)


class InMemory(Dataset):
    """Decoded uint8 images and targets held in memory, items shaped as RGBYDataset's."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor) -> None:
        self.images, self.targets = images, targets

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        return {"image": self.images[index], "target": self.targets[index], "index": index}


def in_memory_loader(dataset: Dataset, batch_size: int, seed: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=True, drop_last=True, generator=generator
    )


def plain_epoch(cfg, datamodule, loader: DataLoader) -> None:
    torch.manual_seed(cfg.seed)
    model = builders.build_module(cfg, datamodule)  # used as a plain nn.Module
    optimizer = instantiate(cfg.optimizer)(params=model.parameters())
    model.train()
    for batch in loader:
        loss = model.criterion(model(batch["image"]), batch["target"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def lightning_epoch(cfg, datamodule, loader: DataLoader | None) -> None:
    """``loader=None``: the datamodule's own train loader (cache, augmentation, workers)."""
    torch.manual_seed(cfg.seed)
    model = builders.build_module(cfg, datamodule)
    trainer = builders.build_trainer(cfg, callbacks=[], loggers=[])
    if loader is None:
        trainer.fit(model, datamodule=datamodule)
    else:
        trainer.fit(model, train_dataloaders=loader)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=None, help="train images (default: all)")
    parser.add_argument("--rounds", type=int, default=1, help="alternating repeats; min is kept")
    parser.add_argument(
        "--datamodule", action="store_true", help="also time hpa.train's own loader"
    )
    parser.add_argument("overrides", nargs="*", help="hpa.train overrides, e.g. model=cnn")
    args = parser.parse_args()
    pl.seed_everything(0, verbose=False)

    cfg = train_config(*TRAINER_OVERRIDES, *args.overrides)
    synthetic_default_root(cfg)
    datamodule = builders.build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    train = datamodule.datasets["train"]
    count = len(train) if args.images is None else min(args.images, len(train))
    images = torch.from_numpy(np.stack([train.read_image(i) for i in range(count)]))
    targets = torch.from_numpy(train.labels[:count])
    dataset = InMemory(images, targets)
    batch_size = cfg.data.batch_size

    plain, lightning, with_datamodule = [], [], []
    for _ in range(args.rounds):
        plain.append(
            time_it(lambda: plain_epoch(cfg, datamodule, in_memory_loader(dataset, batch_size, 0)))
        )
        lightning.append(
            time_it(
                lambda: lightning_epoch(cfg, datamodule, in_memory_loader(dataset, batch_size, 0))
            )
        )
    if args.datamodule and args.images is None:
        with_datamodule.append(time_it(lambda: lightning_epoch(cfg, datamodule, None)))

    plain_s, lightning_s = min(plain), min(lightning)
    rows = [
        (
            "model, image size, batch size",
            f"{cfg.model.name}, {cfg.data.image_size} px, {batch_size}",
        ),
        ("train images, torch threads", f"{count}, {torch.get_num_threads()}"),
        ("plain PyTorch loop", f"{plain_s:7.1f} s  ({count / plain_s:.1f} images/s)"),
        (
            "hpa module + Lightning Trainer",
            f"{lightning_s:7.1f} s  ({count / lightning_s:.1f} images/s)",
        ),
        ("overhead", f"{100 * (lightning_s / plain_s - 1):+7.1f} %   (target <= 5%)"),
    ]
    if with_datamodule:
        seconds = with_datamodule[0]
        rows.append(
            (
                "  the same, hpa.train's loader (cache, augmentation, workers)",
                f"{seconds:7.1f} s  ({100 * (seconds / plain_s - 1):+.1f} % vs plain)",
            )
        )
    print_table("train: one epoch, Lightning + HPAModule vs a plain loop", rows)


if __name__ == "__main__":
    main()
