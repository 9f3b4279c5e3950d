"""Trained checkpoints: finding them (a file, a list, a folder of runs), checking and loading them,
and writing tuned thresholds into them."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from hpa.core.errors import HPAInputError
from hpa.core.io import atomic_path
from hpa.core.run_dir import RunDir, model_files
from hpa.models.module import HPAModule

log = logging.getLogger(__name__)


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
    checkpoint_path: str | Path,
    tta: str | None = "none",
    tta_reduce: str = "mean",
    tta_crop_size: int | None = None,
) -> HPAModule:
    """Load a trained module for evaluation or prediction, on the CPU, with the test-time
    augmentation ``tta``/``tta_reduce``/``tta_crop_size`` (``hpa.evaluation.tta``; ``tta=None``
    keeps the checkpoint's own three).

    The file is checked first (``check_checkpoint``) and loaded with ``weights_only=True``. The
    backbone is built without fetching pretrained weights: the checkpoint holds them all.
    """
    check_checkpoint(checkpoint_path)
    augmentation = (
        {}
        if tta is None
        else {"tta": tta, "tta_reduce": tta_reduce, "tta_crop_size": tta_crop_size}
    )
    try:
        return HPAModule.load_from_checkpoint(
            checkpoint_path,
            map_location="cpu",
            weights_only=True,
            pretrained=False,
            pretrained_path=None,
            **augmentation,
        )
    except (RuntimeError, KeyError, TypeError, ValueError) as error:
        raise HPAInputError(
            f"{checkpoint_path} does not fit this project's model: {str(error).splitlines()[0]}"
        ) from None


def initialize_from(module: HPAModule, checkpoint_path: str | Path) -> None:
    """Copy the network weights of a trained checkpoint into ``module`` (``model.init_from``: a
    second stage, e.g. at a higher resolution). Weights only: the module keeps its own channel
    statistics, thresholds, optimizer and schedule. HPAInputError, before any training, when the
    checkpoint's network does not have exactly the module's weights and shapes."""
    checkpoint = check_checkpoint(checkpoint_path)
    prefix = "backbone."
    source = {
        name: value for name, value in checkpoint["state_dict"].items() if name.startswith(prefix)
    }
    target = {name: value for name, value in module.state_dict().items() if name.startswith(prefix)}
    problems = [
        f"{name} is {tuple(source[name].shape)} there, {tuple(target[name].shape)} here"
        for name in target
        if name in source and source[name].shape != target[name].shape
    ]
    missing = [name for name in target if name not in source]
    unexpected = [name for name in source if name not in target]
    if missing:
        problems.append(f"{len(missing)} weight(s) missing there, e.g. {missing[0]}")
    if unexpected:
        problems.append(f"{len(unexpected)} weight(s) unknown here, e.g. {unexpected[0]}")
    if problems:
        trained = checkpoint["hyper_parameters"].get("name")
        raise HPAInputError(
            f"model.init_from={checkpoint_path} does not fit this model: it holds a {trained} "
            f"network, this run builds {module.hparams.name}; " + "; ".join(problems[:5])
        )
    module.load_state_dict(source, strict=False)
    log.info("initialised the %d network weights from %s", len(source), checkpoint_path)
