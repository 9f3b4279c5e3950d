"""Evaluate checkpoints on the test split of their run (``python -m hpa.eval``, hpa/eval.py).

Writes ``metrics.json``, ``test_predictions.csv`` and ``test_per_class.csv`` (precision, recall,
F1 and support per class) into its own run directory and prints the per-class table.

``ckpt_path`` may also be a list or a folder of checkpoints (a k-fold multirun): each member is
tested on its own, then their probabilities are averaged and the ensemble is scored at the mean
of the members' thresholds (``hpa.evaluation.ensemble``). ``tta=flips|dihedral`` averages
(``tta_reduce=max``: maximum) each model's probabilities over flipped and rotated copies;
``tta=dihedral_crops`` over those of crops of the whole images of a run trained on crops
(``data.load_size``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from hpa.core import metric_names
from hpa.core.errors import HPAInputError
from hpa.core.run_dir import RunDir
from hpa.data.datamodule import HPADataModule
from hpa.data.split import load_split
from hpa.evaluation import ensemble, metrics
from hpa.evaluation.predictions import (
    collected_test_frame,
    frame_probabilities,
    frame_targets,
    write_prediction_artifacts,
)
from hpa.evaluation.thresholds import binarize
from hpa.evaluation.tta import tta_input
from hpa.models.checkpoints import check_checkpoint, checkpoint_paths, load_module
from hpa.models.module import HPAModule
from hpa.run import builders
from hpa.run.cells import CellStage, cell_stage_of, run_cell_config, score_test_cells

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    paths = checkpoint_paths(cfg.ckpt_path)
    run_dir = RunDir(cfg.paths.output_dir)
    try:
        data_cfg, crop_size = _data_config(cfg, RunDir.of_checkpoint(paths[0]))
    except HPAInputError:
        check_checkpoint(paths[0])  # a foreign file is named as such, not as a missing run
        raise
    first = load_module(paths[0], cfg.tta, cfg.tta_reduce, crop_size)
    cell_stage = _cell_stage(cfg, RunDir.of_checkpoint(paths[0]), len(paths))
    datamodule = _datamodule(cfg, data_cfg, first, RunDir.of_checkpoint(paths[0]))
    datamodule.prepare_data()
    datamodule.setup("test")
    split_ids, split_assignment = datamodule.split_table  # every row, skipped images included
    for path in paths[1:]:
        _check_same_test_split(path, paths[0], split_ids, split_assignment, cfg)
    run_dir.write_skipped_images(datamodule.skipped_images)

    trainer = builders.build_trainer(cfg, callbacks=[], loggers=[], enable_checkpointing=False)
    members, frames = [], []
    for path in paths:
        model = first if path == paths[0] else load_module(path, cfg.tta, cfg.tta_reduce, crop_size)
        check_same_label_set(model, first, path, paths[0])
        log.info("testing %s (tta=%s)", path, cfg.tta)
        results = trainer.test(model, datamodule=datamodule, verbose=len(paths) == 1)[0]
        frames.append(collected_test_frame(model, datamodule.datasets["test"]))
        members.append(
            ensemble.Member(
                path=path,
                probabilities=frame_probabilities(first.label_set, frames[-1]),
                thresholds=model.class_thresholds.cpu().numpy(),
                metrics={name: float(value) for name, value in sorted(results.items())},
            )
        )

    predictions = ensemble.average_frames(first.label_set, frames)
    probabilities, thresholds = ensemble.average(members)
    decisions = binarize(probabilities, thresholds, first.hparams.ensure_one_label)
    report = write_prediction_artifacts(run_dir, first.label_set, predictions, decisions)
    if len(members) == 1:
        final_metrics = members[0].metrics
    else:
        final_metrics = _ensemble_metrics(members, probabilities, decisions, predictions, first)
    if cell_stage is not None:
        final_metrics = {
            **final_metrics,
            **score_test_cells(cell_stage, first, datamodule, run_dir),
        }
    run_dir.write_metrics(final_metrics)
    _print_report(report, final_metrics)
    return final_metrics


def _cell_stage(cfg: DictConfig, trained_in: RunDir, num_checkpoints: int) -> CellStage | None:
    """The cell stage of a single-cell run (``cells=``/``segment=``, else the run's own): cell
    mAP of the test split where cell truth exists. One checkpoint: cells are scored by one
    model."""
    cells, segment = run_cell_config(trained_in)
    stage = cell_stage_of(cfg.get("cells") or cells, cfg.get("segment") or segment)
    if stage is not None and num_checkpoints > 1:
        raise HPAInputError(
            f"cell mAP is scored for one checkpoint; got {num_checkpoints} (evaluate them one by "
            "one, or predict with all of them: hpa-predict averages their cell scores)"
        )
    return stage


def _data_config(cfg: DictConfig, trained_in: RunDir) -> tuple[DictConfig, int | None]:
    """The test data config (``data=...`` when given, else the data config of the checkpoint's
    run) with the image sizes the TTA mode needs (``hpa.evaluation.tta.tta_input``), and the
    crop size of a crop mode."""
    data_cfg = cfg.data if cfg.get("data") else trained_in.data_config()
    sizes = tta_input(cfg.tta, int(data_cfg.image_size), data_cfg.get("load_size"))
    sized = OmegaConf.merge(
        data_cfg, {"image_size": sizes.image_size, "load_size": sizes.load_size}
    )
    return sized, sizes.crop_size


def _datamodule(
    cfg: DictConfig, data_cfg: DictConfig, model: HPAModule, trained_in: RunDir
) -> HPADataModule:
    """The test data of ``data_cfg``; ``split_file=...`` when given, else the run's split.csv."""
    return builders.build_evaluation_datamodule(
        data_cfg,
        model,
        split_file=cfg.get("split_file") or trained_in.split_file,
        batch_size=cfg.get("batch_size"),
        num_workers=cfg.get("num_workers"),
    )


def check_same_label_set(model: HPAModule, first: HPAModule, path: Path, first_path: Path) -> None:
    """Ensemble members must predict the same classes."""
    if model.label_set != first.label_set:
        raise HPAInputError(
            f"{path} predicts the classes of the label set {model.label_set.name}, {first_path} "
            f"those of {first.label_set.name}: ensemble members must share their label set"
        )


def _check_same_test_split(
    path: Path, first: Path, ids: np.ndarray, assignment: np.ndarray, cfg: DictConfig
) -> None:
    """Members of an ensemble must share the test split (k folds do: the test rows are held out
    before folding), else the ensemble would be scored on images some members trained on."""
    split_file = RunDir.of_checkpoint(path).split_file
    if cfg.get("split_file") or not split_file.is_file():
        return
    member_assignment = load_split(split_file, ids)  # refuses a split of another csv
    if not np.array_equal(member_assignment == "test", assignment == "test"):
        raise HPAInputError(
            f"{path} was trained with another test split than {RunDir.of_checkpoint(first)} "
            f"({split_file}): ensemble members must share their test split"
        )


def _ensemble_metrics(
    members: list[ensemble.Member],
    probabilities: np.ndarray,
    decisions: np.ndarray,
    predictions: pd.DataFrame,
    first: HPAModule,
) -> dict[str, float]:
    """The ensemble's scores and each member's own test macro F1 (``member<i>/test/...``)."""
    final_metrics = metrics.score_predictions(
        first.label_set,
        probabilities,
        decisions,
        frame_targets(first.label_set, predictions),
        fixed_threshold=first.hparams.threshold,
    )
    for index, member in enumerate(members):
        name = metric_names.TEST_F1_MACRO
        member_f1 = member.metrics[name]
        log.info("member %d %s: %s %.4f", index, member.path, name, member_f1)
        final_metrics[f"member{index}/{name}"] = member_f1
    return dict(sorted(final_metrics.items()))


def _print_report(report: pd.DataFrame, final_metrics: dict[str, float]) -> None:
    table = Table(title="test split, per class")
    for column in ("class", "precision", "recall", "F1", "support"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for row in report.itertuples():
        table.add_row(
            f"{row.class_id:2d} {row.class_name}",
            f"{row.precision:.3f}",
            f"{row.recall:.3f}",
            f"{row.f1:.3f}",
            str(row.support),
        )
    console = Console()
    console.print(table)
    for name in (metric_names.TEST_F1_MACRO, metric_names.TEST_F1_SAMPLES):
        console.print(f"{name}: {final_metrics.get(name, float('nan')):.4f}")
