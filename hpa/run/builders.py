"""Turn a composed Hydra config into the objects of a run. Shared by every entry point."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import pytorch_lightning as pl
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import Logger

from hpa.core.labels import HPA2018, build_label_set
from hpa.core.metric_names import VAL_F1_MACRO
from hpa.core.secrets import redact
from hpa.data.datamodule import HPADataModule
from hpa.models.checkpoints import initialize_from
from hpa.models.losses import BALANCED
from hpa.models.module import HPAModule

log = logging.getLogger(__name__)


def plain_config(config: DictConfig | Mapping | None):
    """A resolved config as plain Python containers (what checkpoints and loggers can store)."""
    if config is None:
        return None
    if isinstance(config, DictConfig):
        return OmegaConf.to_container(config, resolve=True)
    return dict(config)


def build_datamodule(cfg: DictConfig) -> HPADataModule:
    """The data module of ``cfg.data`` (its ``_target_`` class, built by its ``from_config``),
    with the label set of ``cfg.labels`` and the augmentation of ``cfg.augment``."""
    return _datamodule_class(cfg.data).from_config(
        cfg.data, build_label_set(plain_config(cfg.get("labels"))), plain_config(cfg.get("augment"))
    )


def _datamodule_class(data_cfg: DictConfig) -> type[HPADataModule]:
    target = data_cfg.get("_target_")
    return HPADataModule if target is None else get_class(target)


def build_module(cfg: DictConfig, datamodule: HPADataModule) -> HPAModule:
    """The LightningModule of ``cfg.model``, with the loss, optimizer and scheduler groups, the
    datamodule's label set and the channel and class statistics of its train split (a loss with
    ``pos_weight: balanced`` gets the split's class counts). With ``model.init_from=CKPT`` its
    network starts from that checkpoint's weights (no pretrained weights are fetched)."""
    init_from = cfg.model.get("init_from")
    overrides = {"pretrained": False, "pretrained_path": None} if init_from else {}
    module = instantiate(
        cfg.model,
        loss=with_train_class_counts(plain_config(cfg.get("loss")), datamodule.class_statistics),
        labels=datamodule.label_set.to_dict(),
        optimizer=plain_config(cfg.get("optimizer")),
        scheduler=plain_config(cfg.get("scheduler")),
        channel_mean=datamodule.channel_mean.tolist(),
        channel_std=datamodule.channel_std.tolist(),
        monitor=cfg.get("optimized_metric", VAL_F1_MACRO),
        _recursive_=False,
        _convert_="all",
        **overrides,
    )
    if init_from:
        initialize_from(module, init_from)
    return module


def with_train_class_counts(loss: Mapping | None, statistics) -> Mapping | None:
    """The loss config with ``class_counts`` and ``num_images`` of the train split added to every
    node that asks for balanced positive weights (``pos_weight: balanced``), nested ones too
    (weighted sums of losses). The counts are stored with the module's hyper-parameters, so a
    checkpoint rebuilds the same weights."""
    if isinstance(loss, Mapping):
        resolved = {key: with_train_class_counts(value, statistics) for key, value in loss.items()}
        if resolved.get("pos_weight") == BALANCED:
            resolved["class_counts"] = [int(count) for count in statistics.counts]
            resolved["num_images"] = int(statistics.num_images)
        return resolved
    if isinstance(loss, list):
        return [with_train_class_counts(value, statistics) for value in loss]
    return loss


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
    model's own label set (hpa2018 for a model without one) and channel statistics (nothing to
    compute). ``overrides`` (``batch_size``...) that are not None replace the config's values."""
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
    label_set = getattr(model, "label_set", HPA2018)
    return _datamodule_class(data_cfg).from_config(data_cfg, label_set, augment=None)


def log_config(loggers: list[Logger], cfg: DictConfig) -> None:
    """Send the fully resolved config to every logger as the run's hyper-parameters."""
    resolved = redact(OmegaConf.to_container(cfg, resolve=True))
    for logger in loggers:
        logger.log_hyperparams(resolved)
