"""Trained checkpoints: finding them (a file, a list, a folder of runs), checking and loading them,
and writing tuned thresholds into them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from hpa.errors import HPAInputError
from hpa.io import atomic_path
from hpa.models.module import HPAModule
from hpa.run.run_dir import RunDir, model_files


def checkpoint_paths(ckpt_path: str | Path | Sequence[str | Path]) -> list[Path]:
    """A checkpoint, a list of them, or a folder holding ``**/checkpoints/best.ckpt`` (a run or a
    multirun of k-fold runs), as a list of checkpoint files."""
    return model_files(ckpt_path, RunDir.BEST_CHECKPOINT)


def store_thresholds_in_checkpoint(checkpoint_path: str | Path, thresholds) -> None:
    """Write tuned per-class thresholds into a saved checkpoint (atomically)."""
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    checkpoint["state_dict"]["class_thresholds"] = torch.as_tensor(thresholds, dtype=torch.float32)
    with atomic_path(checkpoint_path) as temporary:
        torch.save(checkpoint, temporary)


def check_checkpoint(checkpoint_path: str | Path) -> dict:
    """The checkpoint at ``checkpoint_path`` (loaded on the CPU); HPAInputError unless it is a
    checkpoint of an HPAModule.

    Loads with ``weights_only=True``: tensors and plain containers only, no pickled code.
    """
    checkpoint_path = Path(checkpoint_path)
    if not checkpoint_path.is_file():
        raise HPAInputError(f"checkpoint {checkpoint_path} does not exist")
    try:
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a file that is not a checkpoint
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise HPAInputError(
            f"{checkpoint_path} is not a readable PyTorch checkpoint "
            f"(or holds more than tensors and plain data): {reason}"
        ) from None
    hyper_parameters = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    if (
        not isinstance(hyper_parameters, dict)
        or "name" not in hyper_parameters
        or "state_dict" not in checkpoint
        or "channel_mean" not in checkpoint["state_dict"]
    ):
        raise HPAInputError(
            f"{checkpoint_path} is not a checkpoint of this project "
            "(no hpa model hyper-parameters or channel statistics in it)"
        )
    return checkpoint


def load_module(
    checkpoint_path: str | Path, tta: str = "none", tta_reduce: str = "mean"
) -> HPAModule:
    """Load a trained module for evaluation or prediction, on the CPU, with the test-time
    augmentation ``tta``/``tta_reduce`` (``hpa.evaluation.tta``).

    The file is checked first (``check_checkpoint``) and loaded with ``weights_only=True``. The
    backbone is built without fetching pretrained weights: the checkpoint holds them all.
    """
    check_checkpoint(checkpoint_path)
    try:
        return HPAModule.load_from_checkpoint(
            checkpoint_path,
            map_location="cpu",
            weights_only=True,
            pretrained=False,
            pretrained_path=None,
            tta=tta,
            tta_reduce=tta_reduce,
        )
    except (RuntimeError, KeyError, TypeError, ValueError) as error:
        raise HPAInputError(
            f"{checkpoint_path} does not fit this project's model: {str(error).splitlines()[0]}"
        ) from None
