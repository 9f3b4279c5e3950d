"""The LightningDataModule: a data root -> split -> datasets -> (oversampled) loaders.

``setup`` composes the steps, each in its own module:

1. read the table (hpa.data.table; ``read_table``, which a data module of another layout
   replaces);
2. validate the channel files (hpa.data.validate);
3. read the external roots (hpa.data.external), then split data.root with its groups of
   near-duplicates kept together (hpa.data.grouped_split);
4. join the external data: drop external duplicates of val and test images, count the leaks
   (hpa.data.external, hpa.data.leaks);
5. build the caches and 6. the transforms, 7. the datasets (hpa.data.split_datasets,
   hpa.data.transforms);
8. count the classes of the train split (hpa.data.class_statistics) and compute the channel
   statistics (hpa.data.normalization).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.seed import pl_worker_init_function
from torch.utils.data import DataLoader

from hpa.core.distributed import evaluation_sampler, world_of
from hpa.core.labels import LabelSet
from hpa.data import synthetic
from hpa.data.cache import PackedImages
from hpa.data.class_statistics import ClassStatistics
from hpa.data.config import DataConfig
from hpa.data.dataset import RGBYDataset, collate_samples
from hpa.data.duplicates import RowPairs
from hpa.data.epoch_seeding import EpochSeededSampler, EpochShuffleSampler
from hpa.data.external import (
    ExternalRoot,
    external_samples_table,
    join_external_roots,
    read_external_roots,
)
from hpa.data.grouped_split import split_with_duplicate_groups
from hpa.data.leaks import duplicate_leak_report
from hpa.data.normalization import channel_statistics
from hpa.data.sampler import (
    DistributedOversamplingSampler,
    OversamplingSampler,
    check_minority_classes,
    class_weights,
    frequency_table,
    image_weights,
    minority_classes_of,
)
from hpa.data.split import SPLITS, save_split
from hpa.data.split_datasets import build_split_caches, build_split_datasets
from hpa.data.table import TableReader, read_image_table
from hpa.data.transforms import evaluation_crop, train_augmentation
from hpa.data.validate import checked_samples

log = logging.getLogger(__name__)


def seed_worker(worker_id: int) -> None:
    """Seed a DataLoader worker: Lightning's seeding of torch, numpy and random, plus the worker's
    copy of the albumentations pipeline, from torch's per-worker seed (which follows the run
    seed), so augmented epochs are repeatable and differ between workers."""
    pl_worker_init_function(worker_id)
    augmentation = torch.utils.data.get_worker_info().dataset.augmentation
    if augmentation is not None:
        augmentation.set_random_seed(torch.initial_seed() % 2**32)


class HPADataModule(pl.LightningDataModule):
    """Reads ``root/train.csv`` (the columns of ``label_set``) and
    ``root/train/{Id}_{color}.{png,jpg,tif}``; built from the Hydra ``data`` node by
    ``from_config``.

    ``setup`` validates the input (csv and the existence of every channel file), splits it
    multilabel-stratified (or reads ``split_file``), and computes the per-channel mean and std of
    the train split unless they are given. It runs once; later calls are no-ops, so the train entry
    point can call it before fitting to refuse bad input before any training starts.

    ``external`` roots (same layout) add their images to the train split only (hpa.data.external).
    With ``duplicates.enabled`` (the default) near-duplicate samples are looked for
    (hpa.data.duplicates): groups of duplicates of ``root`` never straddle two splits, external
    duplicates of val and test images are dropped, and ``leak_report`` counts the duplicate pairs
    per pair of splits. ``setup("test")`` and ``setup("predict")`` (evaluation, which reads its
    split from a file) skip both.

    With a ``load_size`` the images are read (and cached) at that size: the train split gives
    random ``image_size`` crops of them, val and test their centre crops (hpa.data.transforms).

    After ``setup``: ``datasets`` (train, val, test), ``class_statistics`` (of the train split the
    run trains on), ``channel_mean`` and ``channel_std``; ``split_table`` (ids, split) of every
    csv row and ``ids``, ``labels``, ``assignment`` of the rows kept; ``skipped_images``,
    ``external_samples`` and ``leak_report`` for the run directory.
    """

    def __init__(
        self,
        config: DataConfig,
        label_set: LabelSet,
        augment: Mapping[str, Mapping] | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.label_set = label_set
        self.augment = augment
        # checked here, before any data is read
        self.minority_classes = minority_classes_of(label_set, config.sampler.minority_classes)
        if config.sampler.oversample and config.sampler.strategy == "minority":
            check_minority_classes(label_set, self.minority_classes)

        self.skipped_images: pd.DataFrame | None = None  # Id, file, problem of dropped samples
        self.external: list[ExternalRoot] = []
        self.external_samples: pd.DataFrame | None = None  # root, Id, status, reason per row
        # near-duplicate pairs (csv rows): within root; and (external row, root row) per external
        self.root_pairs: RowPairs | None = None
        self.external_pairs: list[RowPairs] = []
        self.leak_report: pd.DataFrame | None = None  # duplicate pairs per pair of splits

        self.ids: np.ndarray | None = None
        self.labels: np.ndarray | None = None
        self.assignment: np.ndarray | None = None  # "train" | "val" | "test" per kept row
        # (ids, assignment) of every row of the csv, skipped images included
        self.split_table: tuple[np.ndarray, np.ndarray] | None = None
        self.packed_images: PackedImages | None = None  # the cache of the kept rows
        self.datasets: dict[str, RGBYDataset] = {}
        self.class_statistics: ClassStatistics | None = None
        self.channel_mean: np.ndarray | None = None
        self.channel_std: np.ndarray | None = None

    @classmethod
    def from_config(
        cls, data: Mapping, label_set: LabelSet, augment: Mapping[str, Mapping] | None = None
    ) -> HPADataModule:
        """The data module of a Hydra ``data`` node (conf/data/*.yaml; a DictConfig is resolved).
        An unknown key is refused, naming it, before any data is read."""
        return cls(DataConfig.from_mapping(data), label_set, augment)

    @property
    def root(self) -> Path:
        return self.config.root

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def load_size(self) -> int | None:
        return self.config.load_size

    @property
    def read_size(self) -> int:
        """The size images are read and cached at: ``load_size``, else ``image_size``."""
        return self.config.read_size

    @property
    def batch_size(self) -> int:
        return self.config.loader.batch_size

    read_table: TableReader = staticmethod(read_image_table)
    """Reads the table of a data root (``data.root`` and each of ``data.external``) with the
    run's label set: the Kaggle layout. A data module of another layout sets its own reader."""

    def prepare_data(self) -> None:
        if self.config.synthetic is not None:
            synthetic.ensure_synthetic_root(self.config.root, **asdict(self.config.synthetic))

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        config = self.config
        training = stage not in ("test", "predict")
        table = self.read_table(config.root, self.label_set)
        keep, self.skipped_images = checked_samples(
            table.image_dir, table.ids, config.validate, config.on_bad_image
        )
        if training:
            self.external = read_external_roots(
                config.external,
                table,
                self.label_set,
                config.validate,
                config.on_bad_image,
                read_table=self.read_table,
            )
        root_split = split_with_duplicate_groups(
            table,
            keep,
            config.split,
            config.duplicates if training else None,
            config.cache.cache_dir,
        )
        if root_split.duplicates is not None:
            self.root_pairs = root_split.duplicates.pairs
        self.external_pairs = join_external_roots(
            self.external, table, root_split, config.cache.cache_dir
        )
        self.leak_report = duplicate_leak_report(
            root_split, self.external, self.external_pairs, config.split.split_file
        )
        self.external_samples = external_samples_table(self.external)
        # split.csv lists every row of the csv (reusable once bad images are fixed); skipped
        # samples are left out of the datasets
        self.split_table = (table.ids, root_split.assignment)
        kept = table.rows(keep)
        self.ids, self.labels, self.assignment = kept.ids, kept.labels, root_split.assignment[keep]
        for name in SPLITS:
            log.info("%s split: %d images", name, int((self.assignment == name).sum()))

        caches = None
        if config.cache.enabled:
            caches = build_split_caches(
                kept, self.external, config.read_size, config.cache.cache_dir
            )
            self.packed_images = caches.root
        datasets = build_split_datasets(
            kept,
            self.assignment,
            self.external,
            config.image_size,
            config.read_size,
            train_augmentation(
                self.augment, config.image_size, config.load_size, config.split.seed
            ),
            evaluation_crop(config.image_size, config.load_size),
            caches,
        )
        self.class_statistics = ClassStatistics.from_labels(
            self.label_set, datasets["train"].labels
        )
        if training:
            self.class_statistics.warn_about_absent_classes()
        self.channel_mean, self.channel_std = channel_statistics(
            config.normalize, datasets["train"], config.split.seed
        )
        self.datasets = datasets
        if config.sampler.oversample:
            self._log_oversampling()

    def save_split(self, path: str | Path) -> None:
        """Write the split as ``Id,split`` (and ``fold`` for k-fold) to ``path``."""
        split = self.config.split
        save_split(path, *self.split_table, fold=split.fold if split.num_folds else None)

    def sampler_class_weights(self) -> np.ndarray | None:
        """The oversampling weight of each class, from the class counts of the train split
        (``class_statistics``); None without oversampling. Needs ``setup``."""
        sampler = self.config.sampler
        if not sampler.oversample:
            return None
        if self.class_statistics is None:
            raise RuntimeError("sampler_class_weights needs the train split: call setup first")
        return class_weights(
            self.label_set,
            self.class_statistics.counts,
            strategy=sampler.strategy,
            minority_classes=self.minority_classes,
            boost=sampler.boost,
            power=sampler.power,
            max_weight=sampler.max_weight,
        )

    def _train_image_weights(self) -> np.ndarray:
        return image_weights(self.datasets["train"].labels, self.sampler_class_weights())

    def _log_oversampling(self) -> None:
        weights = self._train_image_weights()
        epoch = OversamplingSampler(weights, draws=self.config.sampler.draws)
        log.info(
            "oversampling (%s draws, %d images an epoch from %d): expected share of train "
            "images per epoch holding each class\n%s",
            self.config.sampler.draws,
            len(epoch),
            len(weights),
            frequency_table(self.label_set, self.datasets["train"].labels, weights),
        )

    def collate(self, name: str):
        """The collate function of split ``name``'s loader (a data module of bags has its own)."""
        return collate_samples

    def _loader(self, name: str, shuffle: bool = False, sampler=None, generator=None) -> DataLoader:
        dataset = self.datasets[name]
        batch_size, num_workers = self.config.loader.batch_size, self.config.loader.num_workers
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            sampler=sampler,
            collate_fn=self.collate(name),
            num_workers=num_workers,
            persistent_workers=num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            # a last batch of one image breaks batch norm in training
            drop_last=name == "train" and len(dataset) > batch_size,
            worker_init_fn=seed_worker if num_workers > 0 else None,
            generator=generator,
        )

    def train_dataloader(self) -> DataLoader:
        seed, draws = self.config.split.seed, self.config.sampler.draws
        oversample = self.config.sampler.oversample
        world_size, rank = world_of(self.trainer)
        if world_size > 1:
            # Lightning calls set_epoch of a DistributedSampler itself (it would wrap any other
            # sampler without passing set_epoch on): each rank draws its own share of the epoch
            if not oversample:
                return self._loader("train", shuffle=True)  # Lightning's DistributedSampler
            sampler = DistributedOversamplingSampler(
                self._train_image_weights(), world_size, rank, seed=seed, draws=draws
            )
            return self._loader("train", sampler=sampler)
        if oversample:
            order = OversamplingSampler(self._train_image_weights(), seed=seed, draws=draws)
        else:
            order = EpochShuffleSampler(len(self.datasets["train"]), seed=seed)
        # each epoch's order and augmentation depend only on (seed, epoch): resumed runs repeat
        augmentation = self.datasets["train"].augmentation
        seeded = EpochSeededSampler(order, seed, augmentation)
        # Lightning creates the loader's iterator before it calls set_epoch, and worker processes
        # start drawing indices at once: a run resumed at epoch e must draw e's from the start
        # (the epoch Lightning will pass to set_epoch: its loop's processed epochs)
        seeded.start_at(self._epoch_to_train())
        return self._loader("train", sampler=seeded, generator=seeded.generator)

    def _epoch_to_train(self) -> int:
        if self.trainer is None:
            return 0
        return int(self.trainer.fit_loop.epoch_progress.current.processed)

    def _evaluation_loader(self, name: str) -> DataLoader:
        """Under DDP each rank evaluates its own rows and every row is seen exactly once."""
        world_size, rank = world_of(self.trainer)
        if world_size == 1:
            return self._loader(name)
        return self._loader(name, sampler=evaluation_sampler(self.datasets[name], world_size, rank))

    def train_pass_dataloader(self) -> DataLoader:
        """The train split once, in order, with its crops and augmentation as configured (an
        evaluation datamodule has none): the batch-norm pass of ``hpa.average``."""
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._evaluation_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._evaluation_loader("test")
