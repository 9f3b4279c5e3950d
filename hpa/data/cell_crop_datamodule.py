"""The data module of a cell-crop model (``cells=crops``): one cell at a time, trained from
image-level labels.

The image-level steps are ``CellDataModule``'s (the table, the split by image, the synthetic
set); each split's images are then segmented (the run's ``segment=``, masks cached) and cut into
crops centred on each cell, the other cells masked out, cached once per crop and segmenter
settings (hpa.data.cells.crops). The crops are ``data.crops.size`` px, the crop model's input
(``image_size`` of this module); ``data.image_size`` is the size of the whole images, which
only the image-level steps read.

- train: one item per cell with its image's labels (weak labels), or its soft pseudo-label
  from a first run (``crops.pseudo_labels``: a cells csv such as a run's ``train_cells.csv``);
  with ``crops.bag_size`` > 0, bags of up to that many cells of one image with the image's
  labels instead, for multiple-instance pooling (``model.mil_pooling=max|attention``);
- val and test: bags of all the cells of each image with the image's labels, so that
  checkpointing, thresholds and the test metrics are image-level, as for the image model (the
  module pools its cells' logits). Images in which segmentation found no cell are left out.

The sampler, loaders, epoch seeding and normalisation are ``HPADataModule``'s; the channel
statistics are those of the train crops.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from hpa.core.errors import HPAInputError
from hpa.core.labels import LabelSet
from hpa.data.cell_datamodule import CellConfig, CellDataModule
from hpa.data.cells import MaskCache, build_segmenter
from hpa.data.cells.crop_datasets import CellBagDataset, CellCropDataset, collate_bags
from hpa.data.cells.crops import CropCache
from hpa.data.cells.label_augmentation import LabelAugmentation
from hpa.data.config import DataConfig
from hpa.data.dataset import collate_samples
from hpa.data.normalization import channel_statistics
from hpa.data.split import SPLITS
from hpa.data.transforms import train_augmentation

log = logging.getLogger(__name__)

CROPS_FOLDER = "cell_crops"


@dataclass(frozen=True)
class CropConfig:
    """The ``data.crops`` node (conf/cells/crops.yaml documents each key)."""

    size: int = 64
    margin: float = 0.1
    mask_others: bool = True
    bag_size: int = 0
    pseudo_labels: Path | None = None
    augment: Mapping | None = None
    segment: Mapping = field(default_factory=lambda: {"name": "watershed"})

    def __post_init__(self) -> None:
        if self.size < 8:
            raise HPAInputError(f"data.crops.size must be at least 8 px: {self.size}")
        if self.bag_size < 0:
            raise HPAInputError(
                f"data.crops.bag_size must be >= 0 (0: single crops): {self.bag_size}"
            )
        if not 0 <= self.margin < 1:
            raise HPAInputError(f"data.crops.margin must be in [0, 1): {self.margin}")

    @classmethod
    def from_mapping(cls, crops: Mapping | None) -> CropConfig:
        crops = dict(crops or {})
        known = [item.name for item in dataclasses.fields(cls)]
        unknown = sorted(set(crops) - set(known))
        if unknown:
            raise HPAInputError(
                f"unknown key(s) {', '.join(f'data.crops.{key}' for key in unknown)}; data.crops "
                f"has {', '.join(known)}"
            )
        if crops.get("pseudo_labels") is not None:
            crops["pseudo_labels"] = Path(crops["pseudo_labels"])
        return cls(**crops)


class CellCropDataModule(CellDataModule):
    """``CellDataModule`` whose datasets are cell crops (see the module docstring)."""

    def __init__(
        self,
        config: DataConfig,
        label_set: LabelSet,
        augment: Mapping[str, Mapping] | None = None,
        cells: CellConfig | None = None,
        crops: CropConfig | None = None,
    ) -> None:
        super().__init__(config, label_set, augment, cells)
        self.crops = crops or CropConfig()
        # checked before any data is read
        self.segmenter = build_segmenter(dict(self.crops.segment))
        self.label_augmentation = LabelAugmentation.from_config(label_set, self.crops.augment)
        self.crop_cache: CropCache | None = None
        self.image_datasets: dict = {}  # the image-level datasets of each split

    @classmethod
    def from_config(
        cls, data: Mapping, label_set: LabelSet, augment: Mapping[str, Mapping] | None = None
    ) -> CellCropDataModule:
        if isinstance(data, DictConfig):
            data = OmegaConf.to_container(data, resolve=True)
        data = dict(data)
        crops = CropConfig.from_mapping(data.pop("crops", None))
        cells, rest = CellConfig.split_from(data)
        config = DataConfig.from_mapping(rest)
        # the crops are the model's images: the packed cache of whole images would go unread
        config = dataclasses.replace(config, cache=dataclasses.replace(config.cache, enabled=False))
        return cls(config, label_set, augment, cells, crops)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        super().setup(stage)
        images = self.image_datasets = self.datasets
        self.crop_cache = CropCache(
            crops_folder_of(self.masks_dir()),
            MaskCache(self.masks_dir(), self.segmenter),
            size=self.image_size,
            margin=self.crops.margin,
            mask_others=self.crops.mask_others,
        )
        every_id = np.concatenate([images[name].ids for name in SPLITS])
        self.crop_cache.ensure(
            self.root / "train", every_id, processes=self.cells.segment_processes
        )

        train = images["train"]
        single_crops = CellCropDataset(
            self.crop_cache,
            train.ids,
            train.labels,
            augmentation=train_augmentation(
                self.augment, self.image_size, None, self.config.split.seed
            ),
            label_augmentation=self.label_augmentation,
            cell_targets=self._pseudo_labels(train.ids, train.labels),
        )
        if self.crops.bag_size:
            train_set = CellBagDataset(
                self.crop_cache,
                train.ids,
                train.labels,
                augmentation=single_crops.augmentation,
                bag_size=self.crops.bag_size,
            )
        else:
            train_set = single_crops
        self.datasets = {
            "train": train_set,
            **{
                name: CellBagDataset(self.crop_cache, images[name].ids, images[name].labels)
                for name in SPLITS
                if name != "train"
            },
        }
        for name, dataset in self.datasets.items():
            log.info("%s split: %d %s", name, len(dataset), _item_name(dataset))
        self.channel_mean, self.channel_std = channel_statistics(
            self.config.normalize, single_crops, self.config.split.seed
        )

    @property
    def image_size(self) -> int:
        """The crops' side (``data.crops.size``): the model's input."""
        return self.crops.size

    def image_dataset(self, split: str):
        """The image-level dataset of ``split``: every image, those in which segmentation
        found no cell included (their truth cells count as missed)."""
        return self.image_datasets[split]

    def collate(self, name: str):
        if isinstance(self.datasets[name], CellBagDataset):
            return collate_bags
        return collate_samples

    def _pseudo_labels(self, ids: np.ndarray, image_labels: np.ndarray) -> np.ndarray | None:
        """Soft targets of the train cells from ``crops.pseudo_labels``, a cells csv (the run's
        label-set id column, ``cell_id`` and one column per class, e.g. a run's
        ``train_cells.csv``); a cell keeps only its image's classes. None without a file."""
        path = self.crops.pseudo_labels
        if path is None:
            return None
        if not path.is_file():
            raise HPAInputError(f"data.crops.pseudo_labels: {path} not found")
        table = pd.read_csv(path, dtype={self.label_set.id_column: str})
        columns = [self.label_set.id_column, "cell_id", *self.label_set.class_names]
        missing = [column for column in columns if column not in table.columns]
        if missing:
            raise HPAInputError(f"{path}: missing column(s) {missing}")
        scores = table.set_index([self.label_set.id_column, "cell_id"])[
            list(self.label_set.class_names)
        ]
        image_rows, cell_ids = self.crop_cache.index(np.asarray(ids).astype(str))
        keys = pd.MultiIndex.from_arrays([np.asarray(ids).astype(str)[image_rows], cell_ids])
        absent = ~keys.isin(scores.index)
        if absent.any():
            first = keys[np.flatnonzero(absent)[0]]
            raise HPAInputError(
                f"{path} has no row for {absent.sum()} train cell(s), e.g. image {first[0]} cell "
                f"{first[1]}: pseudo-labels must come from a run with the same split and "
                "segmentation (its train_cells.csv)"
            )
        soft = scores.loc[keys].to_numpy(dtype=np.float32)
        if not np.isfinite(soft).all() or (soft < 0).any() or (soft > 1).any():
            raise HPAInputError(f"{path}: pseudo-labels must be numbers in [0, 1]")
        return soft * np.asarray(image_labels, dtype=np.float32)[image_rows]


def _item_name(dataset) -> str:
    return "images (bags of cells)" if isinstance(dataset, CellBagDataset) else "cells"


def crops_folder_of(masks_dir: Path) -> Path:
    """Where the crops are cached: beside the masks."""
    return Path(masks_dir).parent / CROPS_FOLDER
