"""Train, validate and test a classifier: ``python -m hpa.train [overrides]``.

Examples::

    python -m hpa.train                                   # synthetic default, resnet18, CPU
    python -m hpa.train model=resnet50 data.oversample=true
    python -m hpa.train data=hpa data.root=/data/hpa trainer=gpu
    python -m hpa.train -m data.fold=0,1,2,3,4 data.num_folds=5
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import hydra
import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from hpa import builders, metrics, report
from hpa.artifacts import write_test_artifacts
from hpa.data.datamodule import HPADataModule
from hpa.data.duplicates import write_leak_report
from hpa.data.epoch_seeding import epoch_seeding
from hpa.data.external import write_external_samples
from hpa.data.validate import write_skipped_images
from hpa.distributed import (
    close_process_group,
    gather_in_dataset_order,
    relaunch_job_not_sweep,
)
from hpa.errors import exit_on_input_error
from hpa.io import write_json
from hpa.labels import NUM_CLASSES
from hpa.models.module import HPAModule, store_thresholds_in_checkpoint
from hpa.resume import continue_loggers, exit_on_non_finite_loss, prepare_resume
from hpa.secrets import redact
from hpa.thresholds import save_thresholds, search_thresholds
from hpa.wandb_report import finish_wandb_runs

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, float]:
    """Run one training job described by ``cfg``; returns its final metrics."""
    resumed_position = prepare_resume(cfg)  # resume=RUN_DIR, ckpt_path=last: continue that run
    output_dir = Path(cfg.paths.output_dir)
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)

    datamodule = builders.build_datamodule(cfg)
    # Prepare and validate the data now, so bad input stops the run before any training.
    datamodule.prepare_data()
    datamodule.setup("fit")
    datamodule.save_split(output_dir / "split.csv")
    write_skipped_images(output_dir, datamodule.skipped_images)
    write_leak_report(output_dir, datamodule.leak_report)
    write_external_samples(output_dir, datamodule.external_samples)

    model = builders.build_module(cfg, datamodule)
    callbacks = builders.build_callbacks(cfg) + epoch_seeding(cfg.get("seed"))
    loggers = builders.build_loggers(cfg)
    continue_loggers(loggers, resumed_position)
    trainer = builders.build_trainer(cfg, callbacks, loggers)
    relaunch_job_not_sweep(trainer, output_dir)  # DDP processes of a multirun job: its folder
    builders.log_config(loggers, cfg)

    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    if trainer.interrupted:
        raise KeyboardInterrupt("training was interrupted")

    best_path = _best_checkpoint_path(trainer)
    final_metrics = {}
    for result in trainer.validate(model, datamodule=datamodule, ckpt_path=best_path):
        final_metrics.update(result)
    thresholds = _decision_thresholds(cfg, trainer, model, datamodule, best_path)
    save_thresholds(output_dir / "thresholds.json", thresholds)
    if best_path:
        store_thresholds_in_checkpoint(best_path, thresholds)
    if cfg.get("test"):
        for result in trainer.test(model, datamodule=datamodule, ckpt_path=best_path):
            final_metrics.update(result)
        write_test_artifacts(output_dir, model, datamodule.datasets["test"])

    final_metrics = {name: float(value) for name, value in sorted(final_metrics.items())}
    write_json(output_dir / "metrics.json", final_metrics)
    if cfg.get("report") and trainer.is_global_zero:
        report.log_to_wandb(loggers, report.write_report(output_dir))
    _log_summary(final_metrics, output_dir)
    finish_wandb_runs(loggers, final_metrics)
    close_process_group()
    return final_metrics


def _decision_thresholds(
    cfg: DictConfig,
    trainer: pl.Trainer,
    model: HPAModule,
    datamodule: HPADataModule,
    best_path: str | None,
) -> np.ndarray:
    """One threshold per class: tuned on the validation predictions of the best checkpoint
    (``model.thresholds=tuned``) or ``model.threshold`` for every class (``fixed``)."""
    fixed = np.full(NUM_CLASSES, float(model.hparams.threshold))
    if cfg.model.get("thresholds", "fixed") != "tuned":
        return fixed
    batches = trainer.predict(model, dataloaders=datamodule.val_dataloader(), ckpt_path=best_path)
    # under DDP each rank predicted its own rows: gather all of them, in dataset order
    probabilities = gather_in_dataset_order(trainer.strategy, torch.cat(batches)).float().numpy()
    targets = datamodule.datasets["val"].labels[: len(probabilities)]
    thresholds = search_thresholds(probabilities, targets, fallback=model.hparams.threshold)
    log.info("tuned thresholds on %d val images: %s", len(probabilities), np.round(thresholds, 2))
    return thresholds


def _best_checkpoint_path(trainer: pl.Trainer) -> str | None:
    """The best checkpoint when one was saved; None evaluates the weights as they are."""
    callback = trainer.checkpoint_callback
    if callback is not None and getattr(callback, "best_model_path", ""):
        return callback.best_model_path
    log.warning("no best checkpoint was saved: evaluating the final weights")
    return None


def _log_summary(final_metrics: dict[str, float], output_dir: Path) -> None:
    headline = [
        metrics.VAL_F1_MACRO,
        metrics.VAL_F1_SAMPLES,
        metrics.TEST_F1_MACRO,
        metrics.TEST_F1_SAMPLES,
    ]
    lines = [
        f"  {name:<18} {final_metrics[name]:.4f}" for name in headline if name in final_metrics
    ]
    log.info(
        "final metrics (best checkpoint):\n%s\nrun directory: %s", "\n".join(lines), output_dir
    )


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    log.info("config:\n%s", OmegaConf.to_yaml(redact(OmegaConf.to_container(cfg, resolve=True))))
    with exit_on_input_error(), exit_on_non_finite_loss(cfg):
        final_metrics = train(cfg)
    objective = final_metrics.get(cfg.get("optimized_metric"))
    if objective is None or not math.isfinite(objective):
        return None
    return objective


if __name__ == "__main__":
    main()
