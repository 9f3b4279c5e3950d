"""Randomness of a training epoch that depends only on (seed, epoch), so a resumed run repeats it.

Lightning restores the model, optimizer, scheduler, loops and callbacks from ``last.ckpt`` but not
the random generators: after a restart they would continue from the start-of-process state, so
epoch ``e`` of a resumed run would shuffle and augment differently from epoch ``e`` of an
uninterrupted one. Here the shuffle order comes from a generator seeded by (seed, epoch) (Lightning
calls ``set_epoch``), and at the start of every training epoch the global generators (dropout,
DataLoader worker seeds) and the train augmentation are reseeded from (seed, epoch).

Exact with ``num_workers=0``, and with workers re-created each epoch; persistent workers keep the
augmentation state of the epoch they were started in, so with them only the order repeats.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import Sampler


def epoch_seed(seed: int, epoch: int) -> int:
    """A 32-bit seed for one epoch of one run (distinct for distinct (seed, epoch) pairs)."""
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1)[0])


class EpochShuffleSampler(Sampler[int]):
    """A random permutation of ``range(num_samples)`` drawn from (seed, epoch)."""

    def __init__(self, num_samples: int, seed: int = 0) -> None:
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator()
        generator.manual_seed(epoch_seed(self.seed, self.epoch))
        return iter(torch.randperm(self.num_samples, generator=generator).tolist())

    def __len__(self) -> int:
        return self.num_samples


class EpochSeeding(pl.Callback):
    """Reseed torch, numpy, random and the train augmentation at the start of each train epoch."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        seed = epoch_seed(self.seed, trainer.current_epoch)
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        datamodule = trainer.datamodule
        dataset = getattr(datamodule, "datasets", {}).get("train") if datamodule else None
        augmentation = getattr(dataset, "augmentation", None)
        if augmentation is not None:
            augmentation.set_random_seed(seed)


def epoch_seeding(seed: int | None) -> list[pl.Callback]:
    """The callbacks that make a seeded run's epochs repeatable (none for an unseeded run)."""
    return [] if seed is None else [EpochSeeding(seed)]
