"""DDP helpers: evaluation samplers that see every sample exactly once, gathering per-rank
outputs, and multirun jobs whose DDP processes share the job's directory."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import open_dict, read_write
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from pytorch_lightning.strategies import Strategy
from pytorch_lightning.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from torch.utils.data import Dataset

log = logging.getLogger(__name__)

_LAUNCHER_ENVIRONMENT = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
_environment_before_launch: dict[str, str | None] = {}


def world_of(trainer: pl.Trainer | None) -> tuple[int, int]:
    """(number of processes, this process's global rank); (1, 0) without a trainer."""
    if trainer is None:
        return 1, 0
    return trainer.world_size, trainer.global_rank


def evaluation_sampler(dataset: Dataset, num_replicas: int, rank: int):
    """Rows ``rank, rank + num_replicas, ...`` of ``dataset``, in order: over all ranks every row
    once. (Lightning's default DistributedSampler pads the ranks with repeated rows, which would
    count them twice in the metrics.) Ranks may differ by one batch, which evaluation allows."""
    return UnrepeatedDistributedSampler(
        dataset, num_replicas=num_replicas, rank=rank, shuffle=False
    )


def all_gather_rows(strategy: Strategy, rows: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's ``rows`` (any number along dim 0, the same trailing shape), on every rank,
    in rank order. Collective: every rank must call it."""
    if strategy.world_size == 1:
        return [rows]
    device = strategy.root_device
    count = torch.tensor([rows.shape[0]], device=device)
    counts = strategy.all_gather(count).view(-1).tolist()
    padded = torch.zeros((max(counts), *rows.shape[1:]), dtype=rows.dtype, device=device)
    padded[: rows.shape[0]] = rows.to(device)
    gathered = strategy.all_gather(padded)  # world_size x max_count x ...
    return [gathered[rank, :count].cpu() for rank, count in enumerate(counts)]


def gather_in_dataset_order(strategy: Strategy, rows: torch.Tensor) -> torch.Tensor:
    """The outputs of an ``evaluation_sampler`` loader, re-assembled in dataset order on every
    rank: rank ``r`` saw rows ``r, r + world_size, ...``."""
    parts = all_gather_rows(strategy, rows)
    if len(parts) == 1:
        return rows
    merged = torch.empty((sum(len(part) for part in parts), *rows.shape[1:]), dtype=rows.dtype)
    for rank, part in enumerate(parts):
        merged[rank :: len(parts)] = part
    return merged


def relaunch_job_not_sweep(trainer: pl.Trainer, output_dir: str | Path) -> None:
    """Make Lightning's DDP launcher start this multirun job's other processes as single runs.

    Lightning starts the other ranks by running the command line again with
    ``hydra.run.dir=<HydraConfig run.dir>``. In a multirun job that command is the whole sweep
    (``-m`` and every sweep value) and run.dir is not the job's directory. Here the command
    becomes this job's own overrides in RUN mode and run.dir the job's directory, so the ranks
    of a job share its directory and a sweep gets one directory per job, not per process.
    A no-op outside multirun and for trainers that start no processes of their own.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    launcher = getattr(trainer.strategy, "launcher", None)
    if not isinstance(launcher, _SubprocessScriptLauncher) or not HydraConfig.initialized():
        return
    hydra_config = HydraConfig.get()
    if hydra_config.mode != RunMode.MULTIRUN:
        return
    # Lightning's launcher leaves these in this process's environment; close_process_group puts
    # them back, or the next job would take its processes for launched from outside
    _environment_before_launch.update(
        {name: os.environ.get(name) for name in _LAUNCHER_ENVIRONMENT}
    )
    sys.argv = [sys.argv[0], *hydra_config.overrides.task, "hydra.mode=RUN"]
    log.info("DDP processes of this job will run: %s", " ".join(sys.argv[1:]))
    with read_write(hydra_config), open_dict(hydra_config):
        hydra_config.run.dir = str(output_dir)


def close_process_group() -> None:
    """End this job's process group (and the environment its launch left behind). The next job
    of a multirun then starts processes and a group of its own instead of Lightning reusing this
    group, whose other processes have exited."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    for name, value in _environment_before_launch.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    _environment_before_launch.clear()
