"""Finding trained checkpoints and the run directories they belong to."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import ListConfig

from hpa.errors import HPAInputError

BEST_CHECKPOINT = Path("checkpoints") / "best.ckpt"


def checkpoint_paths(ckpt_path: str | Path | Sequence[str | Path]) -> list[Path]:
    """A checkpoint, a list of them, or a folder holding ``**/checkpoints/best.ckpt`` (a run or a
    multirun of k-fold runs), as a list of checkpoint files."""
    if isinstance(ckpt_path, ListConfig):
        ckpt_path = list(ckpt_path)
    given = [ckpt_path] if isinstance(ckpt_path, str | Path) else list(ckpt_path)
    if not given:
        raise HPAInputError("ckpt_path is empty: give a checkpoint, a list of them or a folder")
    paths: list[Path] = []
    for entry in map(Path, given):
        if entry.is_dir():
            found = sorted(entry.glob(f"**/{BEST_CHECKPOINT}"))
            if not found:
                raise HPAInputError(f"no {BEST_CHECKPOINT} under {entry}")
            paths.extend(found)
        elif entry.is_file():
            paths.append(entry)
        else:
            raise HPAInputError(f"checkpoint {entry} does not exist")
    return paths


def run_dir_of(checkpoint_path: str | Path) -> Path:
    """``RUN/checkpoints/best.ckpt`` -> ``RUN``."""
    return Path(checkpoint_path).resolve().parent.parent
