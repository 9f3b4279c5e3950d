"""One training job: fit, validate the best checkpoint, tune decision thresholds, test, write the
run directory and its report. ``python -m hpa.train`` runs it (hpa/train.py).

``write_data_artifacts`` and ``finish_run`` (everything after the weights are fixed) are shared
with ``hpa.average`` (hpa/run/checkpoint_averaging.py), which finishes averaged weights as a run.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from pytorch_lightning.loggers import Logger

from hpa.core import metric_names
from hpa.core.distributed import (
    close_process_group,
    gather_in_dataset_order,
    relaunch_job_not_sweep,
)
from hpa.core.run_dir import RunDir
from hpa.data.datamodule import HPADataModule
from hpa.data.epoch_seeding import epoch_seeding
from hpa.evaluation.predictions import write_test_artifacts
from hpa.evaluation.thresholds import decision_thresholds, policy_parameters
from hpa.integrations.wandb_logging import finish_wandb_runs
from hpa.models.checkpoints import store_thresholds_in_checkpoint
from hpa.models.module import HPAModule
from hpa.models.pretrained import ensure_pretrained_weights
from hpa.run import builders, reporting
from hpa.run.cells import (
    CellStage,
    score_test_cells,
    training_cell_stage,
)
from hpa.run.preflight import check_run_config
from hpa.run.resume import continue_loggers, prepare_resume

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, float]:
    """Run one training job described by ``cfg``; returns its final metrics."""
    resumed_position = prepare_resume(cfg)  # resume=RUN_DIR, ckpt_path=last: continue that run
    check_run_config(cfg)  # a misspelt backbone, loss or policy stops here, before any data
    run_dir = RunDir(cfg.paths.output_dir)
    # offline nodes: no pretrained weights to be had stops the run before any work (a run that
    # starts from a checkpoint, model.init_from, needs none)
    if not cfg.model.get("init_from"):
        ensure_pretrained_weights(
            cfg.model.name, cfg.model.get("pretrained", False), cfg.model.get("pretrained_path")
        )
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)

    datamodule = builders.build_datamodule(cfg)
    cell_stage = training_cell_stage(cfg, datamodule)  # the 2021 task: checked before any data
    # Prepare and validate the data now, so bad input stops the run before any training.
    datamodule.prepare_data()
    datamodule.setup("fit")
    write_data_artifacts(run_dir, datamodule)

    model = builders.build_module(cfg, datamodule)
    run_dir.write_class_counts(class_counts_table(datamodule, model))
    callbacks = builders.build_callbacks(cfg) + epoch_seeding(cfg.get("seed"))
    loggers = builders.build_loggers(cfg)
    continue_loggers(loggers, resumed_position)
    trainer = builders.build_trainer(cfg, callbacks, loggers)
    relaunch_job_not_sweep(trainer, run_dir.path)  # DDP processes of a multirun job: its folder
    builders.log_config(loggers, cfg)

    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    if trainer.interrupted:
        raise KeyboardInterrupt("training was interrupted")

    final_metrics = finish_run(
        trainer,
        model,
        datamodule,
        run_dir,
        _best_checkpoint_path(trainer),
        test=bool(cfg.get("test")),
        report=bool(cfg.get("report")),
        loggers=loggers,
        cell_stage=cell_stage,
    )
    finish_wandb_runs(loggers, final_metrics)
    close_process_group()
    return final_metrics


def write_data_artifacts(run_dir: RunDir, datamodule: HPADataModule) -> None:
    """The split and the data reports of a set-up datamodule: split.csv, labels.json, skipped
    images, duplicate leaks, external samples."""
    datamodule.save_split(run_dir.split_file)
    run_dir.write_label_set(datamodule.label_set)
    run_dir.write_skipped_images(datamodule.skipped_images)
    run_dir.write_leak_report(datamodule.leak_report)
    run_dir.write_external_samples(datamodule.external_samples)


def finish_run(
    trainer: pl.Trainer,
    model: HPAModule,
    datamodule: HPADataModule,
    run_dir: RunDir,
    checkpoint_path: str | Path | None,
    test: bool,
    report: bool,
    loggers: Sequence[Logger] = (),
    cell_stage: CellStage | None = None,
) -> dict[str, float]:
    """What a run does once its weights are fixed (in ``checkpoint_path``, or in ``model`` when
    None): validate them, tune the decision thresholds (into thresholds.json and the checkpoint),
    test them (``test``: metrics, test_predictions.csv, test_per_class.csv), score the test
    split's cells (``cell_stage``, the 2021 task: hpa.run.cells), write metrics.json and
    (``report``) the report. Returns the final metrics."""
    final_metrics = {}
    for result in trainer.validate(model, datamodule=datamodule, ckpt_path=checkpoint_path):
        final_metrics.update(result)
    thresholds = _decision_thresholds(trainer, model, datamodule, checkpoint_path)
    run_dir.write_thresholds(thresholds, model.label_set)
    if checkpoint_path:
        store_thresholds_in_checkpoint(checkpoint_path, thresholds)
    if test:
        for result in trainer.test(model, datamodule=datamodule, ckpt_path=checkpoint_path):
            final_metrics.update(result)
        write_test_artifacts(run_dir, model, datamodule.datasets["test"])
        if cell_stage is not None and trainer.is_global_zero:
            final_metrics.update(score_test_cells(cell_stage, model, datamodule, run_dir))

    final_metrics = {name: float(value) for name, value in sorted(final_metrics.items())}
    run_dir.write_metrics(final_metrics)
    run_dir.write_evaluated_weights(checkpoint_path)
    if report and trainer.is_global_zero:
        reporting.log_to_wandb(list(loggers), reporting.write_report(run_dir.path))
    _log_summary(final_metrics, run_dir, checkpoint_path)
    return final_metrics


def _decision_thresholds(
    trainer: pl.Trainer,
    model: HPAModule,
    datamodule: HPADataModule,
    checkpoint_path: str | Path | None,
) -> np.ndarray:
    """One threshold per class, chosen by the policy ``model.thresholds`` (with
    ``model.threshold_params``) on the validation predictions of the best checkpoint
    (``hpa.evaluation.thresholds.decision_thresholds``)."""
    policy = model.hparams.thresholds
    params = dict(model.hparams.threshold_params or {})
    if "threshold" in policy_parameters(policy):
        params.setdefault("threshold", float(model.hparams.threshold))
    if policy == "fixed":
        no_predictions = np.zeros((0, model.label_set.num_classes))
        return decision_thresholds(policy, no_predictions, no_predictions, **params)
    batches = trainer.predict(
        model, dataloaders=datamodule.val_dataloader(), ckpt_path=checkpoint_path
    )
    # under DDP each rank predicted its own rows: gather all of them, in dataset order
    probabilities = gather_in_dataset_order(trainer.strategy, torch.cat(batches)).float().numpy()
    targets = datamodule.datasets["val"].labels[: len(probabilities)]
    train_label_rate = datamodule.class_statistics.rates
    thresholds = decision_thresholds(policy, probabilities, targets, train_label_rate, **params)
    log.info(
        "%s thresholds from %d val images: %s", policy, len(probabilities), np.round(thresholds, 2)
    )
    return thresholds


def class_counts_table(datamodule: HPADataModule, model: HPAModule) -> pd.DataFrame:
    """``class_counts.csv``: the class statistics of the train split the run uses (external
    images included) and what the run derives from them: each class's train images and label
    rate (the target of ``model.thresholds=rate``), the positive weight of its loss (1 where the
    loss weighs none) and its oversampling weight (1 without ``data.oversample``)."""
    table = datamodule.class_statistics.table()
    num_classes = datamodule.label_set.num_classes
    pos_weight = np.ones(num_classes)
    for module in model.criterion.modules():
        weights = getattr(module, "pos_weight", None)
        if isinstance(weights, torch.Tensor):
            pos_weight = weights.detach().cpu().numpy()
    table["pos_weight"] = pos_weight
    sampler_weights = datamodule.sampler_class_weights()
    table["sampler_weight"] = np.ones(num_classes) if sampler_weights is None else sampler_weights
    return table


def _best_checkpoint_path(trainer: pl.Trainer) -> str | None:
    """The best checkpoint when one was saved; None evaluates the weights as they are."""
    callback = trainer.checkpoint_callback
    if callback is not None and getattr(callback, "best_model_path", ""):
        return callback.best_model_path
    log.warning(
        "no best checkpoint was saved: the final metrics are of the final weights, not of a "
        "best checkpoint (%s says so)",
        RunDir.EVALUATED_WEIGHTS,
    )
    return None


def _log_summary(
    final_metrics: dict[str, float], run_dir: RunDir, checkpoint_path: str | Path | None
) -> None:
    lines = [
        f"  {name:<18} {final_metrics[name]:.4f}"
        for name in metric_names.HEADLINE
        if name in final_metrics
    ]
    weights = Path(checkpoint_path).name if checkpoint_path else "final weights"
    log.info("final metrics (%s):\n%s\nrun directory: %s", weights, "\n".join(lines), run_dir)


def train_and_score(cfg: DictConfig) -> float | None:
    """``hpa.train``: the run, then the value a sweeper (Optuna) optimises."""
    return objective(cfg, train(cfg))


def objective(cfg: DictConfig, final_metrics: dict[str, float]) -> float | None:
    """What a sweep optimises: the run's ``optimized_metric``, or None (a failed trial) when it is
    missing or not finite."""
    value = final_metrics.get(cfg.get("optimized_metric"))
    if value is None or not math.isfinite(value):
        return None
    return value
