"""Randomness of a training epoch that depends only on (seed, epoch), so a resumed run repeats it.

Lightning restores the model, optimizer, scheduler, loops and callbacks from ``last.ckpt`` but not
the random generators: after a restart they would continue from the start-of-process state, so
epoch ``e`` of a resumed run would shuffle and augment differently from epoch ``e`` of an
uninterrupted one. Here the shuffle order comes from a generator seeded by (seed, epoch) (Lightning
calls ``set_epoch``, also for the epoch a run resumes in, where it skips
``on_train_epoch_start``); ``set_epoch`` also reseeds the global generators and the train
augmentation from (seed, epoch), and torch's generator is reseeded from (seed, epoch, batch) before
each training step (dropout), because Lightning draws from it differently in a fresh and in a
resumed epoch. The train loader draws its worker base seed from its own generator.

Each train index is drawn as a ``SeededIndex`` carrying the seed of its augmentation, from
(seed, epoch, position in the epoch): the dataset reseeds the augmentation with it before that
sample, so an image is augmented the same whichever worker (or the main process) reads it and
whatever that worker read before. So a killed and resumed run repeats the uninterrupted run's
metrics.csv and metrics.json with DataLoader workers as without (tested with 0 and 2), and the
batches of an epoch do not depend on ``data.num_workers``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import Sampler

log = logging.getLogger(__name__)


def epoch_seed(seed: int, epoch: int, *more: int) -> int:
    """A 32-bit seed for one epoch (or one batch of it) of one run, from (seed, epoch, ...)."""
    return int(
        np.random.SeedSequence([int(seed), int(epoch), *map(int, more)]).generate_state(1)[0]
    )


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A torch.Generator for one epoch of one run. Seeding it with ``seed + epoch`` instead
    would give seed 5's second epoch the draws of seed 6's first."""
    generator = torch.Generator()
    generator.manual_seed(epoch_seed(seed, epoch))
    return generator


class EpochShuffleSampler(Sampler[int]):
    """A random permutation of ``range(num_samples)`` drawn from (seed, epoch)."""

    def __init__(self, num_samples: int, seed: int = 0) -> None:
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        generator = epoch_generator(self.seed, self.epoch)
        return iter(torch.randperm(self.num_samples, generator=generator).tolist())

    def __len__(self) -> int:
        return self.num_samples


class SeededIndex(int):
    """A dataset index that carries the seed of its sample's augmentation (``.seed``); an int
    everywhere else. It survives the pickling that hands indices to DataLoader workers."""

    seed: int

    def __new__(cls, index: int, seed: int) -> SeededIndex:
        seeded = super().__new__(cls, index)
        seeded.seed = int(seed)
        return seeded

    def __reduce__(self):
        return SeededIndex, (int(self), self.seed)


class EpochSeededSampler(Sampler[int]):
    """Wraps the train sampler; ``set_epoch`` (which Lightning calls before every train epoch, a
    resumed one included, before its first batch is drawn) passes the epoch on and reseeds
    random, numpy, torch (dropout, DataLoader worker seeds) and the train augmentation."""

    def __init__(self, sampler: Sampler[int], seed: int, augmentation=None) -> None:
        self.sampler = sampler
        self.seed = int(seed)
        self.augmentation = augmentation
        self.epoch = 0
        # for the DataLoader: its per-iterator draw of the worker base seed would otherwise come
        # from the global generator, shifting dropout by one draw whenever the iterator is
        # created after ``set_epoch`` (every epoch but the first of a process)
        self.generator = torch.Generator()

    def start_at(self, epoch: int) -> None:
        """Draw the order and the augmentation seeds of ``epoch`` (without reseeding the global
        generators): what a loader created for a run resumed at ``epoch`` must draw before
        Lightning's ``set_epoch``."""
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        self.epoch = int(epoch)
        self.generator.manual_seed(epoch_seed(self.seed, epoch))

    def set_epoch(self, epoch: int) -> None:
        self.start_at(epoch)
        seed = epoch_seed(self.seed, epoch)
        log.info(
            "train epoch %d: order, augmentation and dropout seeded from (%d, %d)",
            epoch,
            self.seed,
            epoch,
        )
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        if self.augmentation is not None:
            self.augmentation.set_random_seed(seed)

    def __iter__(self) -> Iterator[int]:
        # position, not index: an image drawn twice in an epoch (repeat draws) is augmented twice
        for position, index in enumerate(self.sampler):
            yield SeededIndex(index, epoch_seed(self.seed, self.epoch, position))

    def __len__(self) -> int:
        return len(self.sampler)


class BatchSeeding(pl.Callback):
    """Reseed torch's global generator from (seed, epoch, batch) just before each training step,
    so dropout does not depend on what else drew from it since the epoch began (Lightning's own
    steps differ between a fresh and a resumed epoch)."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module, batch, batch_idx: int) -> None:
        torch.manual_seed(epoch_seed(self.seed, trainer.current_epoch, batch_idx))


def epoch_seeding(seed: int | None) -> list[pl.Callback]:
    """The callbacks a seeded run needs for repeatable resumes (none for an unseeded run)."""
    return [] if seed is None else [BatchSeeding(seed)]
