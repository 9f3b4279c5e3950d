"""Running the entry points as a user does, in a subprocess, for the end-to-end tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

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
