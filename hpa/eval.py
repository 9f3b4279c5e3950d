"""Evaluate checkpoints on the test split of their run: ``python -m hpa.eval ckpt_path=PATH``.

Writes ``metrics.json``, ``test_predictions.csv`` and ``test_per_class.csv`` (precision, recall,
F1 and support per class) into its own run directory and prints the per-class table.

``ckpt_path`` may also be a list or a folder of checkpoints (a k-fold multirun): each member is
tested on its own, then their probabilities are averaged and the ensemble is scored at the mean
of the members' thresholds. ``tta=flips|dihedral`` averages (``tta_reduce=max``: maximum) each
model's probabilities over flipped and rotated copies of every test image.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from hpa.data.datamodule import HPADataModule
from hpa.data.split import load_split
from hpa.data.validate import write_skipped_images
from hpa.errors import HPAInputError, exit_on_input_error
from hpa.evaluation.metrics import TEST_F1_MACRO, score_predictions
from hpa.evaluation.predictions import (
    collected_test_frame,
    write_prediction_artifacts,
    write_test_artifacts,
)
from hpa.evaluation.thresholds import binarize
from hpa.evaluation.tta import check_tta_options
from hpa.io import write_json
from hpa.labels import CLASS_NAMES, targets_to_matrix
from hpa.models.module import HPAModule
from hpa.run.checkpoints import checkpoint_paths, load_module, run_dir_of

log = logging.getLogger(__name__)


def _run_data_config(run_dir: Path) -> DictConfig:
    """The data config a training run used, resolved in the context of that run's config."""
    config_path = run_dir / ".hydra" / "config.yaml"
    if not config_path.is_file():
        raise HPAInputError(
            f"{config_path} not found: pass data=... (and split_file=...) for a checkpoint "
            "outside its run directory"
        )
    run_cfg = OmegaConf.load(config_path)
    context = OmegaConf.create(
        {"paths": run_cfg.paths, "seed": run_cfg.get("seed"), "data": run_cfg.data}
    )
    OmegaConf.resolve(context)
    return context.data


def build_eval_datamodule(cfg: DictConfig, model: HPAModule, run_dir: Path) -> HPADataModule:
    data_cfg = cfg.data if cfg.get("data") else _run_data_config(run_dir)
    split_file = cfg.get("split_file") or run_dir / "split.csv"
    overrides = {
        "split_file": str(split_file),
        "oversample": False,
        # the model normalises with the statistics in its checkpoint; none to compute here
        "normalize": {
            "mean": model.channel_mean.flatten().tolist(),
            "std": model.channel_std.flatten().tolist(),
        },
    }
    for key in ("batch_size", "num_workers"):
        if cfg.get(key) is not None:
            overrides[key] = cfg[key]
    data_cfg = OmegaConf.merge(data_cfg, overrides)
    return instantiate(data_cfg, augment=None, _recursive_=False, _convert_="all")


def evaluate(cfg: DictConfig) -> dict[str, float]:
    check_tta_options(cfg.tta, cfg.tta_reduce)
    paths = checkpoint_paths(cfg.ckpt_path)
    output_dir = Path(cfg.paths.output_dir)
    first = load_module(paths[0])
    run_dir = run_dir_of(paths[0])
    datamodule = build_eval_datamodule(cfg, first, run_dir)
    datamodule.prepare_data()
    datamodule.setup("test")
    test_set = datamodule.datasets["test"]
    split_ids, split_assignment = datamodule.split_table  # every row, skipped images included
    for path in paths[1:]:
        _check_same_test_split(path, run_dir, split_ids, split_assignment, cfg)
    write_skipped_images(output_dir, datamodule.skipped_images)

    trainer = pl.Trainer(**cfg.trainer, logger=False, enable_checkpointing=False)
    members = []
    for path in paths:
        model = first if path == paths[0] else load_module(path)
        model.tta, model.tta_reduce = cfg.tta, cfg.tta_reduce
        log.info("testing %s (tta=%s)", path, cfg.tta)
        results = trainer.test(model, datamodule=datamodule, verbose=len(paths) == 1)[0]
        members.append(
            Member(
                path=path,
                metrics={name: float(value) for name, value in sorted(results.items())},
                predictions=collected_test_frame(model, test_set),
                thresholds=model.class_thresholds.cpu().numpy(),
            )
        )

    if len(members) == 1:
        final_metrics = members[0].metrics
        _, report = write_test_artifacts(output_dir, first, test_set)
    else:
        final_metrics, report = _score_ensemble(output_dir, members, first)
    write_json(output_dir / "metrics.json", final_metrics)
    _print_report(report, final_metrics)
    return final_metrics


@dataclass
class Member:
    """One checkpoint's test results: its metrics, prediction frame and class thresholds."""

    path: Path
    metrics: dict[str, float]
    predictions: pd.DataFrame
    thresholds: np.ndarray


def _check_same_test_split(
    path: Path, first_run: Path, ids: np.ndarray, assignment: np.ndarray, cfg: DictConfig
) -> None:
    """Members of an ensemble must share the test split (k folds do: the test rows are held out
    before folding), else the ensemble would be scored on images some members trained on."""
    split_file = run_dir_of(path) / "split.csv"
    if cfg.get("split_file") or not split_file.is_file():
        return
    member_assignment = load_split(split_file, ids)  # refuses a split of another csv
    if not np.array_equal(member_assignment == "test", assignment == "test"):
        raise HPAInputError(
            f"{path} was trained with another test split than {first_run} ({split_file}): "
            "ensemble members must share their test split"
        )


def _score_ensemble(
    output_dir: Path, members: list[Member], first: HPAModule
) -> tuple[dict[str, float], pd.DataFrame]:
    """Average the members' test probabilities and score them at their mean thresholds."""
    predictions = members[0].predictions.copy()
    columns = list(CLASS_NAMES)
    for member in members[1:]:
        if list(member.predictions["Id"]) != list(predictions["Id"]):
            raise HPAInputError("ensemble members predicted different test images")
    predictions[columns] = np.mean([m.predictions[columns].to_numpy() for m in members], axis=0)
    thresholds = np.mean([member.thresholds for member in members], axis=0)
    probabilities = predictions[columns].to_numpy()
    decisions = binarize(probabilities, thresholds, first.hparams.ensure_one_label)
    targets = targets_to_matrix(predictions["Target"])
    final_metrics = score_predictions(
        probabilities, decisions, targets, fixed_threshold=first.hparams.threshold
    )
    for index, member in enumerate(members):
        member_f1 = member.metrics[TEST_F1_MACRO]
        log.info("member %d %s: %s %.4f", index, member.path, TEST_F1_MACRO, member_f1)
        final_metrics[f"member{index}/{TEST_F1_MACRO}"] = member_f1
    report = write_prediction_artifacts(output_dir, predictions, decisions)
    return dict(sorted(final_metrics.items())), report


def _print_report(report, final_metrics: dict[str, float]) -> None:
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
    for name in ("test/f1_macro", "test/f1_samples"):
        console.print(f"{name}: {final_metrics.get(name, float('nan')):.4f}")


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    with exit_on_input_error():
        evaluate(cfg)


if __name__ == "__main__":
    main()
