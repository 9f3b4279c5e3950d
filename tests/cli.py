"""Running the entry points as a user does, in a subprocess, for the end-to-end tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"

# A tiny synthetic set (generated once per data dir) and images small enough for fast runs.
SMALL_SYNTHETIC_SET = (
    "data.synthetic.num_images=120",
    "data.synthetic.image_size=64",
    "data.image_size=64",
    "data.batch_size=8",
)


def run_module(module: str, *arguments: str, env=None) -> subprocess.CompletedProcess:
    """``python -m MODULE ARGUMENTS...`` from the repository root, output captured (``env``: the
    environment, default this one)."""
    command = [sys.executable, "-m", module, *arguments]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)


def train_multirun(
    sweep_dir: Path, data_dir: Path, *overrides: str, env=None
) -> subprocess.CompletedProcess:
    """``python -m hpa.train -m`` with its sweep folder and data dir, output captured."""
    return run_module(
        "hpa.train",
        "-m",
        f"hydra.sweep.dir={sweep_dir}",
        f"paths.data_dir={data_dir}",
        *overrides,
        env=env,
    )


def compose_entry(name: str, overrides: list[str], output_dir: Path) -> DictConfig:
    """The config of entry point ``name`` (conf/<name>.yaml) with ``overrides``, as Hydra composes
    it for a run in ``output_dir``: to call the run's function in the test process."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(name, overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.root_dir = str(output_dir.parent)
    return cfg
