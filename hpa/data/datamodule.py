"""The LightningDataModule: Kaggle-layout data -> split -> datasets -> (oversampled) loaders."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.seed import pl_worker_init_function
from torch.utils.data import DataLoader

from hpa.data import synthetic
from hpa.data.cache import PackedImages, ensure_cache
from hpa.data.dataset import RGBYDataset, collate_samples
from hpa.data.duplicates import (
    DEFAULT_THRESHOLD,
    EXTERNAL,
    LEAKS,
    RowPairs,
    check_threshold,
    duplicate_groups,
    leak_report,
    near_duplicate_pairs,
    root_hashes,
    split_pair_counts,
)
from hpa.data.epoch_seeding import EpochSeededSampler, EpochShuffleSampler
from hpa.data.external import (
    ExternalRoot,
    MultiRootDataset,
    external_samples_table,
    read_external_roots,
)
from hpa.data.reader import read_labels_csv
from hpa.data.sampler import (
    DistributedOversamplingSampler,
    OversamplingSampler,
    checked_draws,
    class_weights,
    frequency_table,
    image_weights,
)
from hpa.data.split import SPLITS, kfold_split, load_split, save_split, train_val_test_split
from hpa.data.transforms import (
    build_augmentation,
    check_crop_sizes,
    evaluation_crop,
    image_crop,
)
from hpa.data.validate import checked_samples
from hpa.errors import HPAInputError
from hpa.run.distributed import evaluation_sampler, world_of

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
    """Reads ``root/train.csv`` and ``root/train/{Id}_{color}.{png,jpg,tif}``.

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
    """

    def __init__(
        self,
        root: str | Path,
        image_size: int = 128,
        load_size: int | None = None,
        batch_size: int = 32,
        num_workers: int = 2,
        split: Sequence[float] = (0.7, 0.15, 0.15),
        split_file: str | Path | None = None,
        num_folds: int | None = None,
        fold: int = 0,
        split_seed: int | None = 0,
        oversample: bool = False,
        sampler: Mapping | None = None,
        normalize: Mapping | None = None,
        augment: Mapping[str, Mapping] | None = None,
        synthetic: Mapping | None = None,
        cache: bool = False,
        cache_dir: str | Path | None = None,
        validate: str = "fast",
        on_bad_image: str = "error",
        external: Sequence[str | Path] | str | None = None,
        duplicates: Mapping | None = None,
    ) -> None:
        super().__init__()
        self.root = Path(root)
        self.image_size = image_size
        check_crop_sizes(image_size, load_size)
        self.load_size = load_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.split_fractions = tuple(split)
        self.split_file = Path(split_file) if split_file else None
        self.num_folds = num_folds
        self.fold = fold
        self.split_seed = 0 if split_seed is None else split_seed  # the split is always repeatable
        self.oversample = oversample
        self.sampler_config = dict(sampler or {})
        # checked here, before any data is read; "repeat" as in conf/data/hpa.yaml
        self.sampler_draws = checked_draws(self.sampler_config.pop("draws", "repeat"))
        self.normalize_config = dict(normalize or {})
        self.augment_config = augment
        self.synthetic_config = dict(synthetic) if synthetic else None
        self.use_cache = cache
        self.cache_dir = cache_dir
        self.validate = validate
        self.on_bad_image = on_bad_image
        self.skipped_images = None  # Id, file, problem of the samples dropped by validation
        if isinstance(external, str | Path):
            external = [external]
        self.external_roots = [Path(root) for root in external or ()]
        self.duplicates_config = _checked_duplicates_config(duplicates)

        self.external: list[ExternalRoot] = []
        self.external_samples = None  # root, Id, status, reason of every external csv row
        # near-duplicate pairs (csv rows): within root; and (external row, root row) per external
        self.root_pairs: RowPairs | None = None
        self.external_pairs: list[RowPairs] = []
        self.leak_report = None  # duplicate pairs per pair of splits, ignoring them and not

        self.ids: np.ndarray | None = None
        self.labels: np.ndarray | None = None
        self.assignment: np.ndarray | None = None  # "train" | "val" | "test" per row of train.csv
        # (ids, assignment) of every row of the csv, skipped images included
        self.split_table: tuple[np.ndarray, np.ndarray] | None = None
        self.channel_mean: np.ndarray | None = None
        self.channel_std: np.ndarray | None = None
        self.datasets: dict[str, RGBYDataset] = {}
        self.packed_images: PackedImages | None = None  # the cache of every row of train.csv

    @property
    def image_dir(self) -> Path:
        return self.root / "train"

    @property
    def csv_path(self) -> Path:
        return self.root / "train.csv"

    def prepare_data(self) -> None:
        if self.synthetic_config is not None:
            synthetic.ensure_synthetic_root(self.root, **self.synthetic_config)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        if not self.root.is_dir():
            raise HPAInputError(f"data root {self.root} does not exist (set data.root=PATH)")
        self.ids, self.labels = read_labels_csv(self.csv_path)
        keep, self.skipped_images = checked_samples(
            self.image_dir, self.ids, self.validate, self.on_bad_image
        )
        self.assignment = self._split_honouring_duplicates(
            keep, for_training=stage not in ("test", "predict")
        )
        # split.csv lists every row of the csv (reusable once bad images are fixed); skipped
        # samples are left out of the datasets
        self.split_table = (self.ids, self.assignment)
        self.ids, self.labels, self.assignment = (
            self.ids[keep],
            self.labels[keep],
            self.assignment[keep],
        )
        for name in SPLITS:
            log.info("%s split: %d images", name, int((self.assignment == name).sum()))
        if self.use_cache:
            self.packed_images = ensure_cache(
                self.image_dir, self.ids, self.read_size, cache_dir=self.cache_dir
            )

        train_crop = image_crop(self.image_size, self.load_size, random=True)
        augmentation = build_augmentation(self.augment_config, crop=train_crop)
        if augmentation is not None:
            # albumentations keeps its own random state: seed it for repeatable runs
            augmentation.set_random_seed(self.split_seed)
        for name in SPLITS:
            rows = np.flatnonzero(self.assignment == name)
            self.datasets[name] = RGBYDataset(
                self.image_dir,
                self.ids[rows],
                self.labels[rows],
                self.image_size,
                augmentation=augmentation if name == "train" else self._evaluation_crop(),
                cache=self.packed_images,
                cache_rows=rows,
                load_size=self.read_size,
            )
        external_parts = self._external_train_datasets(augmentation)
        if external_parts:
            self.datasets["train"] = MultiRootDataset([self.datasets["train"], *external_parts])
            log.info("train split with external images: %d images", len(self.datasets["train"]))
        self._set_normalization()
        if self.oversample:
            self._log_oversampling()

    @property
    def read_size(self) -> int:
        """The size images are read and cached at: ``load_size``, else ``image_size``."""
        return self.image_size if self.load_size is None else self.load_size

    def _evaluation_crop(self):
        return evaluation_crop(self.image_size, self.load_size)

    def _split_honouring_duplicates(self, keep: np.ndarray, for_training: bool) -> np.ndarray:
        """The split of every csv row. For training, also read the external roots and, unless
        disabled, keep groups of duplicates in one split, drop external duplicates of val and
        test images and count the pairs per pair of splits."""
        if for_training:
            self.external = read_external_roots(
                self.external_roots, self.csv_path, self.ids, self.validate, self.on_bad_image
            )
        if for_training and self.duplicates_config["enabled"]:
            self._find_duplicates(keep)
        groups = None
        if self.root_pairs is not None and len(self.root_pairs.first):
            groups = duplicate_groups(len(self.ids), self.root_pairs)
        self.assignment = self._split(groups)
        if self.root_pairs is not None:
            self._drop_external_duplicates()
            self._report_leaks(self._split_ignoring_duplicates(groups))
        for external in self.external:
            external.log_counts()
        self.external_samples = external_samples_table(self.external)
        return self.assignment

    def _split(self, groups: np.ndarray | None) -> np.ndarray:
        """The split of every csv row; the rows of one of ``groups`` share their split."""
        if self.split_file is not None:
            log.info("reading the split from %s", self.split_file)
            return load_split(self.split_file, self.ids)
        if self.num_folds:
            return kfold_split(
                self.labels,
                num_folds=self.num_folds,
                fold=self.fold,
                test_fraction=self.split_fractions[2],
                seed=self.split_seed,
                groups=groups,
            )
        return train_val_test_split(
            self.labels, self.split_fractions, seed=self.split_seed, groups=groups
        )

    def _split_ignoring_duplicates(self, groups: np.ndarray | None) -> np.ndarray:
        if groups is None or self.split_file is not None:
            return self.assignment
        log.info("for the leak report, the split that ignoring duplicates would give:")
        return self._split(None)

    def _find_duplicates(self, keep: np.ndarray) -> None:
        """Near-duplicate pairs within root and between each external root and root."""
        threshold = self.duplicates_config["threshold"]
        kept_rows = np.flatnonzero(keep)
        hashes = root_hashes(self.image_dir, self.ids[kept_rows], self.cache_dir)
        pairs = near_duplicate_pairs(hashes, threshold=threshold)
        self.root_pairs = RowPairs(kept_rows[pairs.first], kept_rows[pairs.second], pairs.distance)
        log.info(
            "near-duplicates (distance <= %d): %d pair(s) among the %d images of %s",
            threshold,
            len(pairs.first),
            len(kept_rows),
            self.root,
        )
        for external in self.external:
            readable_rows = np.flatnonzero(external.readable)
            external_hashes = root_hashes(
                external.image_dir, external.ids[readable_rows], self.cache_dir
            )
            pairs = near_duplicate_pairs(external_hashes, hashes, threshold=threshold)
            self.external_pairs.append(
                RowPairs(readable_rows[pairs.first], kept_rows[pairs.second], pairs.distance)
            )
            log.info(
                "near-duplicates: %d pair(s) of an image of %s and one of %s",
                len(pairs.first),
                external.root,
                self.root,
            )

    def _drop_external_duplicates(self) -> None:
        for external, pairs in zip(self.external, self.external_pairs, strict=True):
            external.drop_duplicates_of_evaluation_images(pairs, self.ids, self.assignment)

    def _report_leaks(self, assignment_ignoring_duplicates: np.ndarray) -> None:
        """Count the duplicate pairs per pair of splits, for the split made ignoring them (with
        every readable external image) and for this run's."""
        counts = {}
        for name, assignment, external_rows in (
            ("ignoring_duplicates", assignment_ignoring_duplicates, "readable"),
            ("this_run", self.assignment, "used"),
        ):
            splits_a = [assignment[self.root_pairs.first]]
            splits_b = [assignment[self.root_pairs.second]]
            for external, pairs in zip(self.external, self.external_pairs, strict=True):
                counted = getattr(external, external_rows)[pairs.first]
                splits_a.append(np.full(int(counted.sum()), EXTERNAL))
                splits_b.append(assignment[pairs.second[counted]])
            counts[name] = split_pair_counts(np.concatenate(splits_a), np.concatenate(splits_b))
        self.leak_report = leak_report(counts["ignoring_duplicates"], counts["this_run"])
        log.info("duplicate pairs per pair of splits:\n%s", self.leak_report.to_string(index=False))
        leaks_left = sum(counts["this_run"][name] for name in LEAKS)
        if leaks_left:
            log.warning(
                "%d duplicate pair(s) join training and evaluation images (the split file %s "
                "was made without grouping duplicates?)",
                leaks_left,
                self.split_file,
            )

    def _external_train_datasets(self, augmentation) -> list[RGBYDataset]:
        """A dataset of the used images of each external root (decoded into its own cache)."""
        datasets = []
        for external in self.external:
            used_rows = np.flatnonzero(external.used)
            if not len(used_rows):
                continue
            cache, cache_rows = None, None
            if self.use_cache:
                # all readable images, so that the cache is the same whichever are dropped
                readable_rows = np.flatnonzero(external.readable)
                cache = ensure_cache(
                    external.image_dir,
                    external.ids[readable_rows],
                    self.read_size,
                    cache_dir=self.cache_dir,
                )
                cache_rows = np.searchsorted(readable_rows, used_rows)
            datasets.append(
                RGBYDataset(
                    external.image_dir,
                    external.ids[used_rows],
                    external.labels[used_rows],
                    self.image_size,
                    augmentation=augmentation,
                    cache=cache,
                    cache_rows=cache_rows,
                    load_size=self.read_size,
                )
            )
        return datasets

    def save_split(self, path: str | Path) -> None:
        """Write the split as ``Id,split`` (and ``fold`` for k-fold) to ``path``."""
        fold = self.fold if self.num_folds else None
        save_split(path, *self.split_table, fold=fold)

    def _set_normalization(self) -> None:
        mean, std = self.normalize_config.get("mean"), self.normalize_config.get("std")
        if mean is not None and std is not None:
            self.channel_mean = np.asarray(mean, dtype=np.float32)
            self.channel_std = np.asarray(std, dtype=np.float32)
        else:
            num_images = int(self.normalize_config.get("num_images", 512))
            self.channel_mean, self.channel_std = self._train_channel_stats(num_images)
        if self.channel_mean.shape != (4,) or self.channel_std.shape != (4,):
            raise HPAInputError("data.normalize.mean and .std need 4 values each (R, G, B, Y)")
        if np.any(self.channel_std <= 0):
            raise HPAInputError(f"data.normalize.std must be positive, got {self.channel_std}")
        log.info(
            "channel mean %s, std %s (RGBY, 0..1 scale)",
            np.round(self.channel_mean, 4).tolist(),
            np.round(self.channel_std, 4).tolist(),
        )

    def _train_channel_stats(self, num_images: int) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std of each channel over a seeded random subset of the train split."""
        train_set = self.datasets["train"]
        rng = np.random.default_rng(self.split_seed)
        chosen = rng.choice(len(train_set), size=min(num_images, len(train_set)), replace=False)
        total = np.zeros(4, dtype=np.float64)
        total_squares = np.zeros(4, dtype=np.float64)
        for index in chosen:
            image = train_set.read_image(index)
            pixels = image.reshape(4, -1).astype(np.float64) / 255.0
            total += pixels.mean(axis=1)
            total_squares += (pixels**2).mean(axis=1)
        mean = total / len(chosen)
        std = np.sqrt(np.maximum(total_squares / len(chosen) - mean**2, 1e-12))
        return mean.astype(np.float32), std.astype(np.float32)

    def _train_image_weights(self) -> np.ndarray:
        train_labels = self.datasets["train"].labels
        weights_per_class = class_weights(train_labels.sum(axis=0), **self.sampler_config)
        return image_weights(train_labels, weights_per_class)

    def _log_oversampling(self) -> None:
        weights = self._train_image_weights()
        epoch = OversamplingSampler(weights, draws=self.sampler_draws)
        log.info(
            "oversampling (%s draws, %d images an epoch from %d): expected share of train "
            "images per epoch holding each class\n%s",
            self.sampler_draws,
            len(epoch),
            len(weights),
            frequency_table(self.datasets["train"].labels, weights),
        )

    def _loader(self, name: str, shuffle: bool = False, sampler=None, generator=None) -> DataLoader:
        dataset = self.datasets[name]
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            sampler=sampler,
            collate_fn=collate_samples,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            # a last batch of one image breaks batch norm in training
            drop_last=name == "train" and len(dataset) > self.batch_size,
            worker_init_fn=seed_worker if self.num_workers > 0 else None,
            generator=generator,
        )

    def train_dataloader(self) -> DataLoader:
        world_size, rank = world_of(self.trainer)
        if world_size > 1:
            # Lightning calls set_epoch of a DistributedSampler itself (it would wrap any other
            # sampler without passing set_epoch on): each rank draws its own share of the epoch
            if not self.oversample:
                return self._loader("train", shuffle=True)  # Lightning's DistributedSampler
            sampler = DistributedOversamplingSampler(
                self._train_image_weights(),
                world_size,
                rank,
                seed=self.split_seed,
                draws=self.sampler_draws,
            )
            return self._loader("train", sampler=sampler)
        if self.oversample:
            order = OversamplingSampler(
                self._train_image_weights(), seed=self.split_seed, draws=self.sampler_draws
            )
        else:
            order = EpochShuffleSampler(len(self.datasets["train"]), seed=self.split_seed)
        # each epoch's order and augmentation depend only on (seed, epoch): resumed runs repeat
        augmentation = self.datasets["train"].augmentation
        seeded = EpochSeededSampler(order, self.split_seed, augmentation)
        return self._loader("train", sampler=seeded, generator=seeded.generator)

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


def _checked_duplicates_config(config: Mapping | None) -> dict:
    """``data.duplicates`` with its defaults: enabled, threshold."""
    checked = {"enabled": True, "threshold": DEFAULT_THRESHOLD}
    unknown = sorted(set(config or {}) - set(checked))
    if unknown:
        raise HPAInputError(f"data.duplicates: unknown key(s) {unknown}; expected {list(checked)}")
    checked.update(config or {})
    if not isinstance(checked["enabled"], bool):
        raise HPAInputError(
            f"data.duplicates.enabled must be true or false: {checked['enabled']!r}"
        )
    check_threshold(checked["threshold"])
    return checked
