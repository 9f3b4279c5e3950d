"""A Lightning callback that records, at each validation epoch of ``fit`` (not the sanity
check, not a later ``validate``), the model's probabilities on the val and test splits and its
loss on val, into a ``Record`` file rewritten after every epoch. For an ``hpa.train`` run::

    +callbacks.quality_recorder._target_=benchmarks.quality.recorder.EpochPredictions
    +callbacks.quality_recorder.path=RECORD.npz

It records the weights that validation judges. Under weight averaging (``callbacks=ema`` or
``swa``) those are the average, which the averaging callback swaps in when the validation epoch
starts and out when it ends. So the recorder records at the start of the validation epoch and
must come after the averaging callback in the trainer's list (``+callbacks.quality_recorder``
adds it last); ``on_fit_start`` refuses any other order.

The record's ``meta["steps_per_epoch"]`` is the number of optimizer steps of the first epoch
recorded: ``trainer.global_step`` at its validation less its value when the epoch started.
(``num_training_batches // accumulate_grad_batches`` floors where Lightning also steps on an
epoch's last, incomplete accumulation, and counting ``on_train_batch_end`` counts batches, not
steps; the difference of ``global_step`` is the steps taken, whatever the accumulation or the
sampler. Every epoch of an hpa run has as many batches: its samplers' lengths are fixed.)

Single-device runs only: each process would record its own rows under DDP.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import WeightAveraging
from pytorch_lightning.trainer.states import TrainerFn
from torch.utils.data import DataLoader

from benchmarks.quality.record import Record
from hpa.data.dataset import collate_samples


class EpochPredictions(pl.Callback):
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.record: Record | None = None
        self.started = 0.0
        self.epoch_start_step = 0

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        position = trainer.callbacks.index(self)
        later = [
            type(callback).__name__
            for callback in trainer.callbacks[position + 1 :]
            if isinstance(callback, WeightAveraging)
        ]
        if later:
            raise RuntimeError(
                f"EpochPredictions must come after the weight-averaging callback {later[0]}, "
                "or it records the raw weights instead of the average that validation judges"
            )
        datasets = trainer.datamodule.datasets
        self.started = time.perf_counter()
        self.record = Record(
            val_targets=datasets["val"].labels,
            test_targets=datasets["test"].labels,
            train_label_rate=datasets["train"].labels.mean(axis=0),
            meta={
                "val_ids": datasets["val"].ids.tolist(),
                "test_ids": datasets["test"].ids.tolist(),
            },
        )

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.epoch_start_step = trainer.global_step

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        # the optimizer steps of the first epoch recorded (validation ends each epoch)
        self.record.meta.setdefault("steps_per_epoch", trainer.global_step - self.epoch_start_step)
        datasets = trainer.datamodule.datasets
        # validation's own batches: a loss that is not a sum over images (Lovasz) depends on them
        batch_size = trainer.datamodule.batch_size
        val_probabilities, val_loss = self._predict(pl_module, datasets["val"], batch_size)
        test_probabilities, _ = self._predict(pl_module, datasets["test"], batch_size)
        elapsed = time.perf_counter() - self.started
        self.record.add_epoch(
            trainer.current_epoch, elapsed, val_loss, val_probabilities, test_probabilities
        )
        self.record.save(self.path)

    @staticmethod
    def _predict(
        pl_module: pl.LightningModule, dataset, batch_size: int
    ) -> tuple[np.ndarray, float]:
        """Probabilities (N, 28) in dataset order, and the mean over images of the module's
        criterion on batches of ``batch_size`` in that order (as validation computes it)."""
        probabilities, loss_sum = [], 0.0
        loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate_samples)
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            for batch in loader:
                logits = pl_module(batch["image"].to(pl_module.device))
                target = batch["target"].to(pl_module.device)
                loss_sum += float(pl_module.criterion(logits, target)) * len(target)
                probabilities.append(torch.sigmoid(logits).float().cpu().numpy())
        pl_module.train(was_training)
        return np.concatenate(probabilities), loss_sum / len(dataset)
