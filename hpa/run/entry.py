"""What every entry point shares: its Hydra config, the logged config, exit codes and closing W&B.

    main = entry_point("eval", "hpa.run.evaluating:evaluate")

makes ``main`` a Hydra app reading ``conf/eval.yaml`` (the clone's top-level ``conf/``, or the
copy inside an installed package) that calls ``evaluate(cfg)``, runnable as ``python -m hpa.eval``
and as the console script ``hpa-eval``. The task's module (and with it torch, Lightning and timm)
is imported only once Hydra has composed the config: ``--help``, shell completion and a refused
override answer in a fraction of a second. Inside it:

- the resolved config is logged, with secrets redacted;
- bad input (``HPAInputError``) ends the run with one message and exit code 2, a diverged training
  loss with exit code 3 (``HYDRA_FULL_ERROR=1`` adds the traceback);
- a W&B run left open (by a failure) is closed, so the next job of a multirun starts its own.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from hpa.core.errors import exit_on_input_error
from hpa.core.run_dir import RunDir
from hpa.core.secrets import redact

log = logging.getLogger("hpa")


def _config_dir() -> Path:
    """``hpa/conf`` inside an installed wheel, else the clone's top-level ``conf/`` (the one
    source: pyproject.toml maps it into the wheel as ``hpa/conf``)."""
    package = Path(__file__).resolve().parents[1]
    installed = package / "conf"
    return installed if installed.is_dir() else package.parent / "conf"


CONFIG_DIR = _config_dir()


def entry_point(config_name: str, task: str) -> Callable[[], Any]:
    """The Hydra app of ``conf/<config_name>.yaml`` that calls ``task`` (``"module:function"``,
    imported when the app runs) with the composed config."""
    module_name, function_name = task.split(":")

    def run(cfg: DictConfig) -> Any:
        log.info(
            "config:\n%s", OmegaConf.to_yaml(redact(OmegaConf.to_container(cfg, resolve=True)))
        )
        with exit_on_input_error(), exit_on_non_finite_loss(cfg):
            try:
                result = getattr(importlib.import_module(module_name), function_name)(cfg)
            except BaseException:
                _close_open_wandb_run(exit_code=1)
                raise
            _close_open_wandb_run(exit_code=0)
            return result

    run.__name__ = function_name
    return hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name=config_name)(run)


@contextmanager
def exit_on_non_finite_loss(cfg: DictConfig) -> Iterator[None]:
    """A NaN or infinite training loss (HPAModule raises FloatingPointError): one message naming
    the last good checkpoint, exit code 3."""
    try:
        yield
    except FloatingPointError as error:
        last = RunDir(cfg.paths.output_dir).last_checkpoint
        kept = (
            f"the last good checkpoint is {last}; after changing the config, continue from it "
            f"with resume={last.parent.parent}"
            if last.is_file()
            else "no checkpoint was saved before it"
        )
        log.error(
            "training stopped: %s (diverged: a learning rate too high?); %s",
            error,
            kept,
            exc_info=_full_error(),
        )
        raise SystemExit(3) from None


def _full_error() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def _close_open_wandb_run(exit_code: int) -> None:
    """Finish a W&B run still open when the job ends (a training run closes its own with its
    final metrics; one that failed half-way may not)."""
    wandb = sys.modules.get("wandb")  # never imported here for a run without W&B
    if wandb is not None and wandb.run is not None:
        wandb.run.finish(exit_code=exit_code)
