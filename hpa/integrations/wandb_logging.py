"""Weights & Biases: the logger factory of ``logger=wandb`` and a report callback.

``WandbReport`` does its work only when a ``WandbLogger`` is among the trainer's loggers (and
only on global rank 0): the label distribution of the splits, a few validation images of the
best checkpoint as RGBY composites captioned with their true and predicted classes, and the
per-class test F1 as a table and a bar chart. ``finish_wandb_runs`` writes the final metrics
into the run summary and closes the run, so each job of a multirun is its own W&B run.
"""

from __future__ import annotations

import logging
import netrc
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.rank_zero import rank_zero_only
from omegaconf import OmegaConf
from pytorch_lightning.loggers import Logger, WandbLogger
from pytorch_lightning.trainer.states import TrainerFn

from hpa.core import metric_names
from hpa.core.secrets import redact
from hpa.evaluation.comparison import run_label
from hpa.plots.rgby import class_names_of, rgby_composite

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def has_wandb_credentials() -> bool:
    """An API key in ``WANDB_API_KEY`` or in the netrc file for the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_logger(offline: bool = False, group: str | None = None, **kwargs) -> WandbLogger:
    """A Lightning ``WandbLogger`` that never blocks on a login prompt: without credentials (or
    with ``WANDB_MODE=offline``) it logs offline. A run left open by an earlier job of the same
    process (one that failed) is closed first, so the logger starts a run of its own.

    Without a ``group``, runs that differ only in their seed share one: the label
    ``hpa.compare --group-seeds`` gives them, so the dashboard groups (and averages) the same runs.
    """
    import wandb

    if group is None:
        group = seedless_run_label(kwargs.get("job_type"))
    if wandb.run is not None:
        wandb.run.finish(exit_code=1)
    offline = offline or os.environ.get("WANDB_MODE") in ("offline", "dryrun")
    if not offline and not has_wandb_credentials():
        log.warning("no W&B credentials (WANDB_API_KEY or `wandb login`): logging offline")
        offline = True
    return WandbLogger(offline=offline, group=group, **kwargs)


def seedless_run_label(task_name: str | None) -> str | None:
    """This Hydra job's run label without its seed (``hpa.evaluation.comparison.run_label``);
    None outside a Hydra job."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    hydra_config = HydraConfig.get()
    choices = {str(k): str(v) for k, v in hydra_config.runtime.choices.items()}
    # as typed: an override such as +x=${oc.env:TOKEN} would resolve to the secret on access
    overrides = OmegaConf.to_container(hydra_config.overrides.task, resolve=False)
    label = run_label({"task_name": task_name or "run"}, overrides, choices, with_seed=False)
    return redact(label)


def wandb_runs(loggers: Iterable[Logger]) -> list:
    """The W&B runs of the ``WandbLogger`` among ``loggers`` (none off global rank 0)."""
    if rank_zero_only.rank != 0:
        return []
    return [logger.experiment for logger in loggers if isinstance(logger, WandbLogger)]


def finish_wandb_runs(loggers: Iterable[Logger], final_metrics: Mapping[str, float]) -> None:
    """Write the final metrics (the best checkpoint's val and test metrics) into the summary of
    each W&B run, close it, and say how to upload it when it ran offline."""
    for run in wandb_runs(loggers):
        run.summary.update(dict(final_metrics))
        offline = run.settings.mode in ("offline", "dryrun")
        run_dir = Path(run.dir).parent
        run.finish()
        if offline:
            log.info(
                "W&B run %s was logged offline; upload it with: wandb sync %s", run.id, run_dir
            )


class WandbReport(pl.Callback):
    """Tables, charts and images for the W&B dashboard (a no-op without a ``WandbLogger``)."""

    def __init__(self, num_images: int = 8) -> None:
        self.num_images = num_images
        self._examples: list | None = None

    @staticmethod
    def _run(trainer: pl.Trainer):
        runs = wandb_runs(trainer.loggers)
        return runs[0] if runs else None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        run = self._run(trainer)
        datasets = getattr(trainer.datamodule, "datasets", None)
        if run is None or not datasets:
            return
        import wandb

        label_set = pl_module.label_set
        counts = {split: datasets[split].labels.sum(axis=0) for split in SPLITS}
        rows = [
            [class_id, name, *(int(counts[split][class_id]) for split in SPLITS)]
            for class_id, name in enumerate(label_set.class_names)
        ]
        rows.append([-1, "images", *(len(datasets[split]) for split in SPLITS)])
        table = wandb.Table(columns=["class_id", "class", *SPLITS], data=rows)
        run.log({"data/label_distribution": table})

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        # the validation of the best checkpoint after fitting (trainer.validate), first batch
        if trainer.state.fn != TrainerFn.VALIDATING or batch_idx != 0 or self._run(trainer) is None:
            return
        images = batch["image"][: self.num_images]
        probabilities = torch.sigmoid(pl_module(images))
        predicted = pl_module.decide(probabilities)
        self._examples = [
            (image, target, prediction)
            for image, target, prediction in zip(
                images.cpu().numpy(),
                batch["target"][: self.num_images].cpu().numpy(),
                predicted.cpu().numpy(),
                strict=True,
            )
        ]

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        run = self._run(trainer)
        if run is None or not self._examples:
            return
        import wandb

        label_set = pl_module.label_set
        pictures = [
            wandb.Image(
                rgby_composite(image),
                caption=f"true: {class_names_of(label_set, target)}\n"
                f"predicted: {class_names_of(label_set, prediction)}",
            )
            for image, target, prediction in self._examples
        ]
        run.log({"val/examples": pictures})
        self._examples = None

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        run = self._run(trainer)
        if run is None:
            return
        import wandb

        label_set = pl_module.label_set
        datasets = getattr(trainer.datamodule, "datasets", {})
        support = (
            datasets["test"].labels.sum(axis=0)
            if "test" in datasets
            else np.zeros(label_set.num_classes)
        )
        rows = []
        for class_id, name in enumerate(label_set.class_names):
            metric = metric_names.per_class_f1_name(metric_names.TEST, label_set, class_id)
            value = trainer.callback_metrics.get(metric)
            if value is not None:
                rows.append([class_id, name, float(value), int(support[class_id])])
        if not rows:
            return
        table = wandb.Table(columns=["class_id", "class", "f1", "support"], data=rows)
        chart = wandb.plot.bar(table, "class", "f1", title="test F1 per class")
        run.log({"test/per_class_f1": table, "test/per_class_f1_chart": chart})

    def on_exception(self, trainer: pl.Trainer, pl_module, exception: BaseException) -> None:
        # a failed job closes its run, so the next job of a multirun does not log into it
        for run in wandb_runs(trainer.loggers):
            run.finish(exit_code=1)
