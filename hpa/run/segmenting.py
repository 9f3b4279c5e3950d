"""``hpa-segment``: the cell masks of a 2021-layout root, cached for training, evaluation and
prediction (hpa.data.cells.MaskCache). The folders of ``folders`` are segmented in turn: ``train``
(the ids of train.csv) and ``test`` (those of sample_submission.csv, else the files present), each
id by this job's shard only (``data.shard`` of ``data.num_shards``)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from hpa.core.errors import HPAInputError
from hpa.core.labels import build_label_set
from hpa.data.cell_datamodule import CellDataModule
from hpa.data.cells import MaskCache, build_segmenter
from hpa.data.reader import read_ids_csv, read_labels_csv
from hpa.run.builders import plain_config
from hpa.run.predicting import test_ids

log = logging.getLogger(__name__)

FOLDERS = ("train", "test")


def segment(cfg: DictConfig) -> dict[str, int]:
    """Segment the images of ``cfg.folders``; returns how many were segmented now per folder."""
    unknown = [folder for folder in cfg.folders if folder not in FOLDERS]
    if unknown:
        raise HPAInputError(f"folders: unknown {unknown}; choose among {list(FOLDERS)}")
    label_set = build_label_set(plain_config(cfg.labels))
    datamodule = CellDataModule.from_config(cfg.data, label_set)
    segmenter = build_segmenter(plain_config(cfg.segment))  # a bad provider stops before any image
    datamodule.prepare_data()
    masks = MaskCache(datamodule.masks_dir(), segmenter)
    cells = datamodule.cells
    segmented = {}
    for folder in cfg.folders:
        ids = _ids_of(datamodule.root, folder, label_set)
        if ids is None:
            log.info("no %s images under %s: skipped", folder, datamodule.root)
            continue
        done = masks.ensure_masks(
            datamodule.root / folder,
            list(ids),
            processes=cells.segment_processes,
            shard=(cells.shard, cells.num_shards),
        )
        segmented[folder] = len(done)
    log.info("masks in %s: %s", masks.folder, segmented)
    return segmented


def _ids_of(root: Path, folder: str, label_set) -> np.ndarray | None:
    if folder == "train":
        csv_path = root / "train.csv"
        if not csv_path.is_file():
            raise HPAInputError(f"{csv_path} not found (data.root={root})")
        return read_labels_csv(csv_path, label_set)[0]
    if not (root / "test").is_dir():
        return None
    sample = root / "sample_submission.csv"
    if sample.is_file():
        return read_ids_csv(sample, label_set.id_column)
    return test_ids(root)
