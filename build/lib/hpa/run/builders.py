"""Turn a composed Hydra config into the objects of a run. Shared by every entry point."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import Logger

from hpa.data.datamodule import HPADataModule
from hpa.evaluation.metrics import VAL_F1_MACRO
from hpa.models.module import HPAModule
from hpa.secrets import redact

log = logging.getLogger(__name__)


def _plain(config: DictConfig | Mapping | None):
    """A resolved config as plain Python containers (what checkpoints and loggers can store)."""
    if config is None:
        return None
    if isinstance(config, DictConfig):
        return OmegaConf.to_container(config, resolve=True)
    return dict(config)


def build_datamodule(cfg: DictConfig) -> HPADataModule:
    return instantiate(
        cfg.data,
        augment=_plain(cfg.get("augment")),
        _recursive_=False,
        _convert_="all",
    )


def build_module(cfg: DictConfig, datamodule: HPADataModule) -> HPAModule:
    """The LightningModule of ``cfg.model``, with the loss, optimizer and scheduler groups and the
    channel statistics of the datamodule's train split."""
    return instantiate(
        cfg.model,
        loss=_plain(cfg.get("loss")),
        optimizer=_plain(cfg.get("optimizer")),
        scheduler=_plain(cfg.get("scheduler")),
        channel_mean=datamodule.channel_mean.tolist(),
        channel_std=datamodule.channel_std.tolist(),
        monitor=cfg.get("optimized_metric", VAL_F1_MACRO),
        _recursive_=False,
        _convert_="all",
    )


def _instantiate_named(group: DictConfig | None) -> list:
    """Instantiate each non-null entry of a named group (callbacks, logger)."""
    if not group:
        return []
    return [instantiate(entry) for entry in group.values() if entry is not None]


def build_callbacks(cfg: DictConfig) -> list[pl.Callback]:
    return _instantiate_named(cfg.get("callbacks"))


def build_loggers(cfg: DictConfig) -> list[Logger]:
    return _instantiate_named(cfg.get("logger"))


def build_trainer(
    cfg: DictConfig, callbacks: list[pl.Callback], loggers: list[Logger], **overrides
) -> pl.Trainer:
    """The Trainer of the ``trainer`` group (``trainer=gpu``, ``trainer.precision=...``), with
    ``overrides`` of its arguments (evaluation and prediction save no checkpoints)."""
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, **overrides)


def build_evaluation_datamodule(
    data_cfg: DictConfig, model: HPAModule, split_file: str | Path, **overrides
) -> HPADataModule:
    """The datamodule a checkpoint is evaluated on: ``data_cfg`` (the training run's data config
    or another), the split in ``split_file``, no oversampling and no augmentation, and the
    model's own channel statistics (nothing to compute). ``overrides`` (``batch_size``...) that
    are not None replace the config's values."""
    data_cfg = OmegaConf.merge(
        data_cfg,
        {
            "split_file": str(split_file),
            "oversample": False,
            "normalize": {
                "mean": model.channel_mean.flatten().tolist(),
                "std": model.channel_std.flatten().tolist(),
            },
        },
        {key: value for key, value in overrides.items() if value is not None},
    )
    return instantiate(data_cfg, augment=None, _recursive_=False, _convert_="all")


def log_config(loggers: list[Logger], cfg: DictConfig) -> None:
    """Send the fully resolved config to every logger as the run's hyper-parameters."""
    resolved = redact(OmegaConf.to_container(cfg, resolve=True))
    for logger in loggers:
        logger.log_hyperparams(resolved)
