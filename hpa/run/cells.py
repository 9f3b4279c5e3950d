"""The cell stage of a run (the 2021 task): segment images, score every cell from the image
model, and, where cell truth exists, measure cell mAP at mask IoU 0.6.

A run with a ``cells`` config (``experiment=single_cell``) trains its model as the 2018 task
does; afterwards ``score_test_cells`` takes the test split's images through:

1. segmentation at each image's own size (``segment=``), cached once per image and settings
   (hpa.data.cells.MaskCache), in ``data.segment_processes`` processes;
2. the model on the image resized for it: class probabilities and, for ``cells=cam``, class
   activation maps from a second pass of the same weights dilated to ``cells.output_stride``
   (hpa.models.activation_maps); a crop model (``cells=crops``) on each cell's crop instead;
3. a score per cell and class (hpa.evaluation.cell_scoring);
4. cell mAP against the truth cells (hpa.evaluation.cell_map) and the share of truth cells that
   the segmentation matched at IoU >= 0.6.

The run writes ``test_cells.csv`` (every cell's scores), ``test_cell_ap.csv`` (AP per class),
``cells.json`` (where the masks are, for the report) and ``test/cell_map``,
``test/cell_match_rate`` and ``test/cell_ap/NN_name`` into its metrics. ``hpa-predict`` reuses
``CellStage`` to write Kaggle's 2021 submission.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader
from tqdm import tqdm

from hpa.core import metric_names
from hpa.core.errors import HPAInputError
from hpa.core.labels import LabelSet
from hpa.core.metric_names import TEST
from hpa.core.run_dir import RunDir
from hpa.data.cell_crop_datamodule import CropConfig, crops_folder_of
from hpa.data.cell_datamodule import CellDataModule
from hpa.data.cells import MaskCache, Segmenter, build_segmenter
from hpa.data.cells.crops import CropCache
from hpa.data.cells.truth import CellTruth
from hpa.data.dataset import collate_samples
from hpa.data.split import SPLITS
from hpa.evaluation.cell_map import CellMAP, segmentation_match_rate
from hpa.evaluation.cell_scoring import (
    CELL_METHODS,
    check_cell_method,
    check_cell_options,
    score_cells,
)
from hpa.models.activation_maps import (
    NATIVE_OUTPUT_STRIDE,
    activation_maps_and_logits,
    with_output_stride,
)
from hpa.models.module import HPAModule
from hpa.run.builders import plain_config

log = logging.getLogger(__name__)

CELL_MAP_IOU = 0.6


@dataclass
class CellStage:
    """How a run finds and scores cells: ``method`` (``cells.method``) with its ``options``;
    cells found by ``segmenter``, whose masks are cached in ``masks`` (set once the data is
    there: ``use_masks_dir``) and segmented in ``processes`` processes. A method that needs
    class maps takes them from the model dilated to ``output_stride`` (``cells.output_stride``,
    hpa.models.activation_maps.with_output_stride)."""

    method: str
    segmenter: Segmenter
    options: dict = field(default_factory=dict)
    output_stride: int = NATIVE_OUTPUT_STRIDE
    processes: int = 1
    shard: tuple[int, int] = (0, 1)
    masks: MaskCache | None = None
    crops: CropCache | None = None
    splits: tuple[str, ...] = (TEST,)

    @property
    def needs_maps(self) -> bool:
        return "class_maps" in check_cell_method(self.method).inputs

    @property
    def needs_crops(self) -> bool:
        return "cell_probabilities" in check_cell_method(self.method).inputs

    def use_masks_dir(self, masks_dir: Path) -> None:
        self.masks = MaskCache(masks_dir, self.segmenter)

    def use_crops(self, crops: Mapping | None) -> None:
        """Cut cells into crops as the run whose model scores them did (its ``data.crops``),
        cached beside the masks; needs ``use_masks_dir`` first."""
        settings = CropConfig.from_mapping(crops)
        self.crops = CropCache(
            crops_folder_of(self.masks.folder),
            self.masks,
            size=settings.size,
            margin=settings.margin,
            mask_others=settings.mask_others,
        )

    def describe(self) -> dict:
        """What ``cells.json`` records: the method, its options, the segmenter and where the
        masks are."""
        return {
            "method": self.method,
            "options": self.options,
            "output_stride": self.output_stride,
            "segmenter": {"name": self.segmenter.name, **self.segmenter.settings()},
            "masks_dir": str(self.masks.folder) if self.masks is not None else None,
        }


def cell_stage_of(
    cells_cfg: Mapping | None, segment_cfg: Mapping | None, processes: int = 1
) -> CellStage | None:
    """The cell stage of a ``cells`` and a ``segment`` config node (None without ``cells``).
    Unknown methods, options and segmenters are refused here, before any data is read."""
    if not cells_cfg:
        return None
    cells_cfg = plain_config(cells_cfg)
    method = cells_cfg.pop("method", None)
    if method is None:
        raise HPAInputError("cells.method is not set (cells=broadcast, cam or crops)")
    splits = tuple(cells_cfg.pop("score_splits", None) or (TEST,))
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown or TEST not in splits:
        raise HPAInputError(
            f"cells.score_splits={list(splits)}: the splits are {', '.join(SPLITS)}, and test is "
            "always scored"
        )
    output_stride = int(cells_cfg.pop("output_stride", None) or NATIVE_OUTPUT_STRIDE)
    cell_method = check_cell_options(method, cells_cfg)
    if output_stride != NATIVE_OUTPUT_STRIDE and "class_maps" not in cell_method.inputs:
        raise HPAInputError(
            f"cells.output_stride={output_stride}: cells={method} uses no class maps (cells=cam)"
        )
    segmenter = build_segmenter(plain_config(segment_cfg or {"name": "watershed"}))
    return CellStage(
        method,
        segmenter,
        cells_cfg,
        processes=processes,
        output_stride=output_stride,
        splits=splits,
    )


def run_cell_config(trained_in: RunDir) -> tuple[dict | None, dict | None]:
    """(the ``cells`` and ``segment`` nodes of the run a checkpoint was trained in), None when
    the run scored no cells."""
    if not trained_in.is_run():
        return None, None
    config = trained_in.config()
    cells, segment = config.get("cells"), config.get("segment")
    return (dict(cells) if cells else None), (dict(segment) if segment else None)


def training_cell_stage(cfg: DictConfig, datamodule) -> CellStage | None:
    """The cell stage of a training run's config, or None (the 2018 task)."""
    if not cfg.get("cells"):
        return None
    if not isinstance(datamodule, CellDataModule):
        raise HPAInputError(
            "cells= scores cells of the 2021 layout: use data=hpa2021 or data=synthetic_cells "
            "(experiment=single_cell sets both)"
        )
    return cell_stage_of(cfg.cells, cfg.get("segment"), datamodule.cells.segment_processes)


def check_model_for_cells(cells_cfg: Mapping | None, module: HPAModule, image_size: int) -> None:
    """HPAInputError, before any data is read, when the model cannot score cells as
    ``cells_cfg`` asks (``cells=cam`` needs a GAP+linear head that timm can dilate to
    ``cells.output_stride``): one forward pass of a blank image."""
    method = CELL_METHODS.get((cells_cfg or {}).get("method"))  # unknown: cell_stage_of says so
    if method is None or "class_maps" not in method.inputs:
        return
    output_stride = int(cells_cfg.get("output_stride") or NATIVE_OUTPUT_STRIDE)
    blank = torch.zeros((1, 4, image_size, image_size), dtype=torch.uint8)
    activation_maps_and_logits(with_output_stride(module, output_stride), blank)


@dataclass
class ScoredImage:
    """One image's cells (H, W label image, 0 background) and their (K, C) scores."""

    sample_id: str
    cells: np.ndarray
    scores: np.ndarray


def scored_images(
    stage: CellStage,
    module: HPAModule,
    loader: DataLoader,
    ids: Sequence[str],
    image_dir: Path,
) -> Iterator[ScoredImage]:
    """Every image of ``loader`` (batches with ``image`` and ``index``; rows of ``ids``) with its
    cells segmented (cached) and scored by the stage's method. A crop model (``cells=crops``)
    reads each image's cell crops instead of the loader's images."""
    ids = [str(sample_id) for sample_id in ids]
    stage.masks.ensure_masks(image_dir, ids, processes=stage.processes, shard=stage.shard)
    if stage.needs_crops:
        yield from _scored_by_crops(stage, module, ids, image_dir, loader.batch_size or 64)
        return
    device = next(module.parameters()).device
    maps_module = with_output_stride(module, stage.output_stride) if stage.needs_maps else None
    for batch in tqdm(loader, "scoring cells", unit="batch"):
        images = batch["image"].to(device)
        with torch.inference_mode():
            module.eval()
            logits = module(images)  # the image probabilities of the model as trained
        maps = None
        if maps_module is not None:
            maps = activation_maps_and_logits(maps_module, images).maps.float().cpu().numpy()
        probabilities = torch.sigmoid(logits.float()).cpu().numpy()
        for row, index in enumerate(batch["index"].tolist()):
            sample_id = ids[index]
            cells = stage.masks.load(sample_id)
            scores = score_cells(
                stage.method,
                probabilities[row],
                int(cells.max()),
                cells=cells,
                class_maps=None if maps is None else maps[row],
                **stage.options,
            )
            yield ScoredImage(sample_id, cells, scores)


def _scored_by_crops(
    stage: CellStage, module: HPAModule, ids: list[str], image_dir: Path, batch_size: int
) -> Iterator[ScoredImage]:
    """Every image of ``ids`` with its cells scored by the crop model on each cell's crop; the
    image's own probabilities are the largest over its cells."""
    if stage.crops is None:
        raise HPAInputError("cells=crops needs the crops of the run's model (CellStage.use_crops)")
    stage.crops.ensure(image_dir, ids, processes=stage.processes)
    num_classes = module.label_set.num_classes
    for sample_id in tqdm(ids, "scoring cell crops", unit="image"):
        cells = stage.masks.load(sample_id)
        cell_ids, crops = stage.crops.load(sample_id)
        crop_probabilities = cell_crop_probabilities(module, crops, batch_size)
        image_probabilities = (
            crop_probabilities.max(axis=0) if len(cell_ids) else np.zeros(num_classes)
        )
        num_cells = int(cells.max())
        cell_probabilities = np.tile(image_probabilities, (num_cells, 1))
        cell_probabilities[np.asarray(cell_ids, dtype=np.int64) - 1] = crop_probabilities
        scores = score_cells(
            stage.method,
            image_probabilities,
            num_cells,
            cell_probabilities=cell_probabilities,
            **stage.options,
        )
        yield ScoredImage(sample_id, cells, scores)


def cell_crop_probabilities(module: HPAModule, crops: np.ndarray, batch_size: int) -> np.ndarray:
    """(K, C) class probabilities of K uint8 crops (K, s, s, 4), in batches, in eval mode."""
    device = next(module.parameters()).device
    module.eval()
    rows = []
    with torch.inference_mode():
        for start in range(0, len(crops), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(crops[start : start + batch_size]))
            logits = module(batch.permute(0, 3, 1, 2).to(device))
            rows.append(torch.sigmoid(logits.float()).cpu().numpy())
    if not rows:
        return np.zeros((0, module.label_set.num_classes))
    return np.concatenate(rows).astype(np.float64)


def score_test_cells(
    stage: CellStage,
    module: HPAModule,
    datamodule: CellDataModule,
    run_dir: RunDir,
) -> dict[str, float]:
    """Score the cells of each split of ``stage.splits`` (test by default); returns their cell
    metrics (none without cell truth). See ``score_split_cells``."""
    scores: dict[str, float] = {}
    for split in stage.splits:
        scores.update(score_split_cells(stage, module, datamodule, run_dir, split))
    return scores


def score_split_cells(
    stage: CellStage,
    module: HPAModule,
    datamodule: CellDataModule,
    run_dir: RunDir,
    split: str = TEST,
) -> dict[str, float]:
    """Score the cells of one split's images (see the module docstring); returns the split's
    cell metrics (``{split}/cell_map``..., empty without cell truth) and writes
    ``{split}_cells.csv`` (and, for test, ``test_cell_ap.csv`` and ``cells.json``)."""
    stage.use_masks_dir(datamodule.masks_dir())
    if stage.needs_crops:
        stage.crops = _crops_of(datamodule)
    image_set = datamodule.image_dataset(split)
    loader = DataLoader(image_set, batch_size=datamodule.batch_size, collate_fn=collate_samples)
    truth = datamodule.cell_truth()
    label_set = module.label_set
    metric = CellMAP(num_classes=label_set.num_classes, iou_threshold=CELL_MAP_IOU)
    matched = total = 0
    rows = []
    for image in scored_images(stage, module, loader, image_set.ids, datamodule.root / "train"):
        rows.append(_cell_rows(label_set, image))
        if truth is None or not truth.has(image.sample_id):
            continue
        truth_cells, truth_classes = _truth_of(truth, image)
        metric.add_image(image.sample_id, truth_cells, truth_classes, image.cells, image.scores)
        found, cells = segmentation_match_rate(truth_cells, image.cells, iou=CELL_MAP_IOU)
        matched, total = matched + found, total + cells
    run_dir.write_split_cells(split, _cells_frame(label_set, rows))
    if split == TEST:
        run_dir.write_cells_info({**stage.describe(), "image_dir": str(datamodule.root / "train")})
    if truth is None or not total:
        log.info("no cell truth for the %s images: cell mAP not scored", split)
        return {}
    return _write_cell_metrics(run_dir, label_set, metric.compute(), matched, total, split)


def _crops_of(datamodule: CellDataModule) -> CropCache:
    crops = getattr(datamodule, "crop_cache", None)
    if crops is None:
        raise HPAInputError(
            "cells=crops scores cells with a model of cell crops: train it with cells=crops "
            "(its data module cuts the crops); an image model scores cells with cells=broadcast "
            "or cells=cam"
        )
    return crops


def _truth_of(truth: CellTruth, image: ScoredImage) -> tuple[np.ndarray, dict]:
    truth_cells, truth_classes = truth.load(image.sample_id)
    if truth_cells.shape != image.cells.shape:
        raise HPAInputError(
            f"{truth.mask_path(image.sample_id)} is {truth_cells.shape[1]}x{truth_cells.shape[0]} "
            f"px, its image's cell mask {image.cells.shape[1]}x{image.cells.shape[0]} px"
        )
    return truth_cells, truth_classes


def _cell_rows(label_set: LabelSet, image: ScoredImage) -> pd.DataFrame:
    present = np.unique(image.cells[image.cells > 0])
    frame = pd.DataFrame(image.scores[present - 1], columns=list(label_set.class_names))
    frame.insert(0, "cell_id", present)
    frame.insert(0, label_set.id_column, image.sample_id)
    return frame


def _cells_frame(label_set: LabelSet, rows: list[pd.DataFrame]) -> pd.DataFrame:
    if rows:
        return pd.concat(rows, ignore_index=True)
    return pd.DataFrame(columns=[label_set.id_column, "cell_id", *label_set.class_names])


def _write_cell_metrics(
    run_dir: RunDir, label_set: LabelSet, scores: dict, matched: int, total: int, split: str
) -> dict[str, float]:
    ap = np.asarray(scores["ap"], dtype=np.float64)
    table = pd.DataFrame(
        {
            "class_id": list(label_set.class_ids),
            "class_name": list(label_set.class_names),
            "ap": ap,
            "truth_cells": scores["truth_cells"],
            "predictions": scores["predictions"],
        }
    )
    if split == TEST:
        run_dir.write_test_cell_ap(table)
    map_name = metric_names.metric_name(split, metric_names.CELL_MAP)
    cell_metrics = {
        map_name: float(scores["map"]),
        metric_names.metric_name(split, metric_names.CELL_MATCH_RATE): matched / total,
    }
    for class_id in label_set.class_ids:
        if np.isfinite(ap[class_id]):
            name = metric_names.per_class_ap_name(split, label_set, class_id)
            cell_metrics[name] = float(ap[class_id])
    log.info(
        "%s cell mAP@%.1f %.4f over %d images; segmentation matched %d of %d truth cells (%.1f%%)",
        split,
        CELL_MAP_IOU,
        cell_metrics[map_name],
        scores["images"],
        matched,
        total,
        100 * matched / total,
    )
    return cell_metrics
