"""Resume an interrupted training run in place, from its ``checkpoints/last.ckpt``.

- ``resume=RUN_DIR``: continue the run in ``RUN_DIR``;
- ``resume=true``: continue the run in this job's own run directory (``hydra.run.dir=RUN_DIR``);
- ``ckpt_path=last``: continue the latest run of the same config, among the run directories beside
  this job's (``logs/<task_name>/runs/*``), "same config" meaning the same command-line overrides
  apart from ``ckpt_path``, ``resume`` and ``hydra.*``.

The run continues in the old run directory: checkpoints, metrics and artifacts are written there,
the CSV logger keeps its ``metrics.csv`` (rows of the interrupted epoch dropped) and a W&B logger
resumes the stored run id. This job's own directory keeps only its ``.hydra/`` and log.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pandas as pd
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict
from pytorch_lightning.loggers import CSVLogger, Logger

from hpa.core.errors import HPAInputError
from hpa.core.run_dir import RunDir
from hpa.models.checkpoints import check_checkpoint

log = logging.getLogger(__name__)

_IGNORED_OVERRIDES = ("ckpt_path", "resume", "hydra.")


def prepare_resume(cfg: DictConfig) -> dict | None:
    """Point ``cfg`` at the run to resume (output dir, ckpt_path, W&B id); None when not resuming.

    Returns the checkpoint's ``epoch`` and ``global_step`` for ``continue_loggers``.
    """
    run_dir = _run_to_resume(cfg)
    if run_dir is None:
        return None
    checkpoint_path = RunDir(run_dir).last_checkpoint
    if not checkpoint_path.is_file():
        raise HPAInputError(f"cannot resume {run_dir}: {checkpoint_path} does not exist")
    checkpoint = check_checkpoint(checkpoint_path)
    position = {"epoch": int(checkpoint["epoch"]), "global_step": int(checkpoint["global_step"])}
    log.info(
        "resuming %s from %s (epoch %d done, step %d)",
        run_dir,
        checkpoint_path,
        position["epoch"],
        position["global_step"],
    )
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
        cfg.ckpt_path = str(checkpoint_path)
        for name, entry in (cfg.get("logger") or {}).items():
            if entry and _is_wandb_logger(str(entry.get("_target_", ""))):
                run_id = _stored_wandb_id(run_dir)
                if run_id:
                    log.info("resuming W&B run %s (logger %s)", run_id, name)
                    entry.id, entry.resume = run_id, "allow"
    return position


def continue_loggers(loggers: list[Logger], position: dict | None) -> None:
    """Keep the CSV logger's rows up to the resumed checkpoint (Lightning would start afresh)."""
    if position is None:
        return
    for logger in loggers:
        if not isinstance(logger, CSVLogger):
            continue
        metrics_file = Path(logger.log_dir) / "metrics.csv"
        if not metrics_file.is_file():
            continue
        rows = pd.read_csv(metrics_file)
        writer = logger.experiment  # creating it deletes metrics.csv: the kept rows are re-logged
        for row in rows.to_dict("records"):
            step, epoch = int(row.pop("step")), row.get("epoch")
            has_epoch = epoch is not None and not math.isnan(epoch)
            done = epoch <= position["epoch"] if has_epoch else step < position["global_step"]
            if done:
                values = {key: value for key, value in row.items() if not _is_missing(value)}
                writer.log_metrics(values, step)
        writer.save()


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _run_to_resume(cfg: DictConfig) -> Path | None:
    resume = cfg.get("resume")
    if cfg.get("ckpt_path") == "last":
        return latest_run_of_same_config(Path(cfg.paths.output_dir), _overrides())
    if resume is None or resume is False:
        return None
    if resume is True:
        return Path(cfg.paths.output_dir)
    run_dir = Path(str(resume))
    if not run_dir.is_dir():
        raise HPAInputError(f"resume={resume}: no such run directory")
    return run_dir


def latest_run_of_same_config(output_dir: Path, overrides: list[str]) -> Path:
    """The run directory beside ``output_dir`` with the same overrides and the newest last.ckpt."""
    wanted = _config_key(overrides)
    candidates = []
    for path in output_dir.parent.iterdir():
        run_dir = RunDir(path)
        checkpoint = run_dir.last_checkpoint
        if path == output_dir or not run_dir.has(RunDir.OVERRIDES) or not checkpoint.is_file():
            continue
        if _config_key(run_dir.overrides()) == wanted:
            candidates.append((checkpoint.stat().st_mtime, path))
    if not candidates:
        raise HPAInputError(
            f"ckpt_path=last: no run under {output_dir.parent} with the same overrides "
            f"({' '.join(sorted(wanted)) or 'none'}) has a {RunDir.LAST_CHECKPOINT}"
        )
    return max(candidates)[1]


def _overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task)


def _config_key(overrides: list[str]) -> tuple[str, ...]:
    kept = []
    for override in overrides:
        key = override.lstrip("+~").split("=", 1)[0]
        if not key.startswith(_IGNORED_OVERRIDES):
            kept.append(override)
    return tuple(sorted(kept))


def _is_wandb_logger(target: str) -> bool:
    """Our factory (conf/logger/wandb.yaml) or Lightning's class, by its config ``_target_``."""
    return target.rsplit(".", 1)[-1] in ("wandb_logger", "WandbLogger")


def _stored_wandb_id(run_dir: Path) -> str | None:
    """The id of the newest W&B run stored under ``run_dir/wandb`` (``[offline-]run-TIME-ID``)."""
    runs = sorted((run_dir / "wandb").glob("*run-*-*"), key=lambda path: path.stat().st_mtime)
    runs = [path for path in runs if path.is_dir()]
    return runs[-1].name.rsplit("-", 1)[-1] if runs else None
