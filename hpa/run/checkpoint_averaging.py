"""Average the last epoch checkpoints of a run, as pudae (3rd in 2018) did:
``python -m hpa.average RUN_DIR --last K`` (``hpa-average``; hpa/average.py, conf/average.yaml).

The run's last K ``checkpoints/epoch=NN.ckpt`` (kept by ``callbacks.epoch_checkpoints.keep_last``)
are averaged entry by entry; the batch-norm statistics of the average are recomputed by one pass
over the run's train split (its training crops, no augmentation); then the average is finished as
a training run finishes its best checkpoint (``hpa.run.training.finish_run``): validated, its
thresholds tuned, tested and reported, into the sub-run ``RUN_DIR/average-lastK/``. That
directory reads like a run (its config is the run's, with an ``average`` node), so
``checkpoints/averaged.ckpt`` is accepted by ``hpa.eval`` and ``hpa.predict`` and ``hpa.compare``
lists it beside the run.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig
from tqdm import tqdm

from hpa.core.errors import HPAInputError
from hpa.core.io import atomic_path
from hpa.core.run_dir import RunDir
from hpa.data.datamodule import HPADataModule
from hpa.models.averaging import average_state_dicts, recompute_batch_norm
from hpa.models.checkpoints import check_checkpoint, load_module
from hpa.models.module import HPAModule
from hpa.run import builders
from hpa.run.training import finish_run, write_data_artifacts

log = logging.getLogger(__name__)

AVERAGE_NODE = "average"
"""The config node the sub-run's config adds to its run's (and its override's key)."""

_CHECKPOINT_KEYS = ("epoch", "global_step", "pytorch-lightning_version", "hparams_name")
"""What the averaged checkpoint keeps of the last one besides its weights and hyper-parameters:
a weights-only Lightning checkpoint, without optimizer, loop or callback states."""


def average_run(cfg: DictConfig) -> dict[str, float]:
    """Average, finish and write the sub-run described by ``cfg`` (conf/average.yaml); returns
    its final metrics."""
    source = RunDir(cfg.run_dir)
    if not source.is_run():
        raise HPAInputError(f"{source} is not a run directory (no {RunDir.CONFIG})")
    paths = last_epoch_checkpoints(source, int(cfg.last))
    run_dir = RunDir(cfg.output_dir) if cfg.get("output_dir") else source.average_subrun(cfg.last)
    trainer = builders.build_trainer(cfg, callbacks=[], loggers=[], enable_checkpointing=False)
    if trainer.world_size > 1:
        raise HPAInputError(
            f"hpa-average runs on one device, not {trainer.world_size} processes: "
            "trainer=gpu (or trainer.devices=1)"
        )
    log.info("averaging %s into %s", ", ".join(path.name for path in paths), run_dir)

    # the last checkpoint's module, with its own test-time augmentation for the test
    model = load_module(paths[-1], tta=None)
    states = [check_checkpoint(path)["state_dict"] for path in tqdm(paths, desc="reading")]
    model.load_state_dict(average_state_dicts(states))

    datamodule = builders.build_evaluation_datamodule(
        source.data_config(),
        model,
        split_file=source.split_file,
        batch_size=cfg.get("batch_size"),
        num_workers=cfg.get("num_workers"),
    )
    datamodule.prepare_data()
    datamodule.setup("fit")  # the train split as the run trained on it (external images too)
    write_data_artifacts(run_dir, datamodule)

    _recompute_batch_norm(model, datamodule, trainer, cfg.get("bn_update_batches"))
    save_averaged_checkpoint(model, paths, run_dir.averaged_checkpoint)
    run_dir.write_config_derived_from(
        source,
        AVERAGE_NODE,
        {
            "last": len(paths),
            "checkpoints": [path.name for path in paths],
            "bn_update_batches": cfg.get("bn_update_batches"),
            "run_dir": str(source.path.resolve()),
        },
        override=f"{AVERAGE_NODE}.last={len(paths)}",
    )
    return finish_run(
        trainer,
        model,
        datamodule,
        run_dir,
        run_dir.averaged_checkpoint,
        test=bool(cfg.get("test", True)),
        report=bool(cfg.get("report", True)),
    )


def last_epoch_checkpoints(run_dir: RunDir, last: int) -> list[Path]:
    """The run's last ``last`` epoch checkpoints, oldest first; HPAInputError when it kept
    fewer."""
    if last < 1:
        raise HPAInputError(f"--last must be at least 1, got {last}")
    found = run_dir.epoch_checkpoints()
    if len(found) < last:
        kept = ", ".join(path.name for path in found) or "none"
        raise HPAInputError(
            f"{run_dir.checkpoint_dir} holds {len(found)} epoch checkpoint(s) ({kept}), fewer "
            f"than the {last} to average: train with callbacks.epoch_checkpoints.keep_last={last} "
            "(or more), or average fewer"
        )
    return found[-last:]


def _recompute_batch_norm(
    model: HPAModule, datamodule: HPADataModule, trainer, num_batches: int | None
) -> None:
    """Batch-norm statistics of the averaged weights from one pass over the train split, on the
    trainer's device and in its precision."""
    loader = datamodule.train_pass_dataloader()
    total = len(loader) if num_batches is None else min(num_batches, len(loader))
    device = trainer.strategy.root_device
    model.to(device)
    batches = tqdm(loader, total=total, desc="batch-norm statistics", unit="batch")
    recompute_batch_norm(
        model, batches, num_batches, device, trainer.precision_plugin.forward_context()
    )
    model.cpu()


def save_averaged_checkpoint(model: HPAModule, averaged: list[Path], path: Path) -> None:
    """The averaged weights as a weights-only checkpoint of the last averaged one (its epoch,
    step and hyper-parameters), naming the checkpoints it averages (atomically)."""
    last = check_checkpoint(averaged[-1])
    checkpoint = {key: last[key] for key in _CHECKPOINT_KEYS if key in last}
    checkpoint["hyper_parameters"] = last["hyper_parameters"]
    checkpoint["state_dict"] = {name: value.cpu() for name, value in model.state_dict().items()}
    checkpoint["averaged_checkpoints"] = [str(checkpoint_path) for checkpoint_path in averaged]
    with atomic_path(path) as temporary:
        torch.save(checkpoint, temporary)
    log.info("wrote %s", path)
