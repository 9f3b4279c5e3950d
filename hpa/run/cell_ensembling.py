"""Ensemble cell scores of several runs, weights chosen on validation cells
(``hpa-ensemble-cells members=[RUN_A,RUN_B,...]``; conf/ensemble_cells.yaml).

Each member is a run directory that scored the val and test cells of one split on the masks of
one segmenter: a training run or an ``hpa-eval`` run with ``cells.score_splits=[val,test]``
(``val_cells.csv``, ``test_cells.csv``, ``cells.json``). Typical members: an image model's
``broadcast`` and ``cam`` scores and a crop model's ``crops`` scores. The weights
(hpa.evaluation.cell_ensemble) are those of the best validation cell mAP; the test cells are
scored once, with them. The run writes ``cell_ensemble.json`` (members, weights, each member's
val and test cell mAP), ``ensemble_weights.csv`` (every weight vector tried, best first),
``test_cells.csv`` and ``metrics.json``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from hpa.core.errors import HPAInputError
from hpa.core.io import write_csv, write_json
from hpa.core.labels import LabelSet
from hpa.core.metric_names import CELL_MAP, TEST, VAL, metric_name
from hpa.core.run_dir import RunDir
from hpa.data.cells.mask_cache import read_mask
from hpa.data.cells.truth import CellTruth
from hpa.evaluation.cell_ensemble import aligned, choose_weights, combine
from hpa.evaluation.cell_map import CellMAP

log = logging.getLogger(__name__)

CELL_MAP_IOU = 0.6
ENSEMBLE_INFO = "cell_ensemble.json"
WEIGHTS_TABLE = "ensemble_weights.csv"


class SplitCells:
    """The masks and truth of one split's images, read once, to score many cells frames."""

    def __init__(self, masks_folder: Path, truth: CellTruth, ids: list[str], label_set: LabelSet):
        self.label_set = label_set
        self.images = {}
        for sample_id in ids:
            if not truth.has(sample_id):
                continue
            mask_path = masks_folder / f"{sample_id}.png"
            cells = read_mask(mask_path)
            self.images[sample_id] = (cells, *truth.load(sample_id))

    def cell_map(self, frame: pd.DataFrame) -> float:
        """Cell mAP at IoU 0.6 of a cells frame of these images."""
        metric = CellMAP(num_classes=self.label_set.num_classes, iou_threshold=CELL_MAP_IOU)
        names = list(self.label_set.class_names)
        by_image = dict(tuple(frame.groupby(self.label_set.id_column, sort=False)))
        for sample_id, (cells, truth_cells, truth_classes) in self.images.items():
            scores = np.zeros((int(cells.max()), len(names)))
            rows = by_image.get(sample_id)
            if rows is not None:
                scores[rows["cell_id"].to_numpy() - 1] = rows[names].to_numpy(dtype=np.float64)
            metric.add_image(sample_id, truth_cells, truth_classes, cells, scores)
        return float(metric.compute()["map"])


def ensemble_cells(cfg: DictConfig) -> dict[str, float]:
    members = [RunDir(Path(path)) for path in cfg.members]
    if len(members) < 2:
        raise HPAInputError(f"members: an ensemble needs at least two runs, got {len(members)}")
    label_set, masks_folder, truth = _shared_setting(members)
    keys = [label_set.id_column, "cell_id"]
    names = list(label_set.class_names)
    frames = {
        split: aligned([_cells_of(run, split, label_set) for run in members], keys, names)
        for split in (VAL, TEST)
    }
    scorers = {
        split: SplitCells(
            masks_folder, truth, list(frames[split][0][label_set.id_column].unique()), label_set
        )
        for split in (VAL, TEST)
    }
    weights, tried = choose_weights(
        frames[VAL], scorers[VAL].cell_map, keys, names, float(cfg.step)
    )
    test_cells = combine(frames[TEST], weights, keys, names)
    metrics = {
        metric_name(VAL, CELL_MAP): float(tried["score"].iloc[0]),
        metric_name(TEST, CELL_MAP): scorers[TEST].cell_map(test_cells),
    }
    member_scores = [
        {
            "run": str(run.path),
            "method": run.cells_info().get("method"),
            "weight": float(weight),
            "val_cell_map": scorers[VAL].cell_map(frames[VAL][position]),
            "test_cell_map": scorers[TEST].cell_map(frames[TEST][position]),
        }
        for position, (run, weight) in enumerate(zip(members, weights, strict=True))
    ]
    run_dir = RunDir(cfg.paths.output_dir)
    write_json(
        run_dir.path / ENSEMBLE_INFO, {"step": float(cfg.step), "members": member_scores, **metrics}
    )
    write_csv(run_dir.path / WEIGHTS_TABLE, tried)
    run_dir.write_test_cells(test_cells)
    run_dir.write_metrics(metrics)
    for member in member_scores:
        log.info(
            "%s (%s): weight %.2f, val cell mAP %.4f, test %.4f",
            member["run"],
            member["method"],
            member["weight"],
            member["val_cell_map"],
            member["test_cell_map"],
        )
    log.info("ensemble: val cell mAP %.4f, test %.4f", *metrics.values())
    return metrics


def _shared_setting(members: list[RunDir]) -> tuple[LabelSet, Path, CellTruth]:
    """(label set, masks folder, cell truth) that every member shares; HPAInputError naming the
    member that differs."""
    infos = [_cells_info(run) for run in members]
    masks = {Path(info["masks_dir"]) for info in infos}
    if len(masks) > 1:
        raise HPAInputError(
            f"the members scored cells on different masks ({', '.join(sorted(map(str, masks)))}): "
            "an ensemble combines scores of the same cells (one segmenter)"
        )
    label_sets = {run.path: _label_set(run) for run in members}
    first = next(iter(label_sets.values()))
    for path, label_set in label_sets.items():
        if label_set != first:
            raise HPAInputError(
                f"{path} predicts {label_set.name}, not {first.name} as the first member"
            )
    return first, masks.pop(), CellTruth(_truth_folder(members[0]), first)


def _cells_info(run: RunDir) -> Mapping:
    try:
        return run.cells_info()
    except FileNotFoundError:
        raise HPAInputError(
            f"{run.path} scored no cells (no cells.json): members are runs of cells=..."
        ) from None


def _training_run(run: RunDir) -> RunDir:
    """The run itself when it trained, else (an hpa-eval run) the run of its checkpoint."""
    config = run.config()
    if config.get("ckpt_path") and not config.get("model"):
        return RunDir.of_checkpoint(config.ckpt_path)
    return run


def _label_set(run: RunDir) -> LabelSet:
    return _training_run(run).label_set()


def _truth_folder(run: RunDir) -> Path:
    folder = _training_run(run).data_config().get("cell_truth")
    if folder is None or not (Path(folder) / "cells.csv").is_file():
        raise HPAInputError(f"the data of {run.path} has no cell truth: the weights need it")
    return Path(folder)


def _cells_of(run: RunDir, split: str, label_set: LabelSet) -> pd.DataFrame:
    path = run.split_cells_path(split)
    if not path.is_file():
        raise HPAInputError(
            f"{path} not found: score the member's {split} cells (cells.score_splits=[val,test])"
        )
    return pd.read_csv(path, dtype={label_set.id_column: str})
