"""Weight averaging callbacks: an EMA of the weights, or SWA over epochs, that validation,
checkpoints and everything after training use instead of the raw weights; and the two steps of
averaging saved checkpoints (``hpa.average``): ``average_state_dicts`` and
``recompute_batch_norm``.

Both build on Lightning's ``WeightAveraging``, which keeps a ``torch.optim.swa_utils.
AveragedModel``, swaps its weights in for each validation epoch and saves them as the
checkpoint's ``state_dict`` (the raw weights go to ``current_model_state``, to resume from). So
checkpoint selection and early stopping judge the averaged weights, and ``best.ckpt`` holds them
for threshold tuning, test, ``hpa.eval`` and ``hpa.predict``. ``_EvaluateAverage`` fixes what
that callback gets wrong for this project (see its docstring).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from itertools import islice
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import WeightAveraging
from torch.optim.swa_utils import get_ema_multi_avg_fn, update_bn

from hpa.core.errors import HPAInputError

log = logging.getLogger(__name__)


class _EvaluateAverage(WeightAveraging):
    """``WeightAveraging`` with these changes:

    - Until the first update the average holds the initial weights: validation and checkpoints
      then use the raw weights (so an average that starts late never evaluates the random init).
    - The average is dropped when fitting ends. Otherwise a later ``trainer.validate/test/predict
      (ckpt_path=best)`` would reload the checkpoint's raw ``current_model_state`` into the module
      (test and predict then run on raw weights) and validation would swap in the final average
      instead of the checkpoint's.
    - The average follows the module to its device (the callback builds it in ``setup``, before
      Lightning moves the module to the GPU).
    """

    def _has_average(self) -> bool:
        return self._average_model is not None and int(self._average_model.n_averaged) > 0

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._average_model is not None and self._device is None:
            self._average_model.to(pl_module.device)

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._has_average():
            self._swap_models(pl_module)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._has_average():
            self._swap_models(pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._has_average():
            self._copy_average_to_current(pl_module)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._average_model = None

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        super().on_save_checkpoint(trainer, pl_module, checkpoint)
        if self._average_model is not None and not self._has_average():
            checkpoint["state_dict"] = checkpoint["current_model_state"]

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # Outside fit the module keeps the checkpoint's state_dict: the averaged weights.
        if self._average_model is not None:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)


def ema_decay(decay: float, num_averaged: int, warmup: bool) -> float:
    """The decay of the update after ``num_averaged`` averaged steps. With ``warmup`` it is at
    most (1 + n) / (10 + n) (TensorFlow's and timm's warm-up), so that the first steps, taken from
    the random init, do not weigh on the average for most of a short run."""
    return min(decay, (1.0 + num_averaged) / (10.0 + num_averaged)) if warmup else decay


def _ema_with_warmup(decay: float):
    """An ``AveragedModel`` multi_avg_fn: ``average = d * average + (1 - d) * weights`` with
    ``d = ema_decay(decay, num_averaged, warmup=True)``."""

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged) -> None:
        step_decay = ema_decay(decay, int(num_averaged), warmup=True)
        if torch.is_floating_point(averaged[0]) or torch.is_complex(averaged[0]):
            torch._foreach_lerp_(averaged, current, 1.0 - step_decay)
        else:  # integer buffers (batch norm's num_batches_tracked)
            for average, value in zip(averaged, current, strict=True):
                average.copy_(average * step_decay + value * (1.0 - step_decay))

    return update


class EMAWeights(_EvaluateAverage):
    """Exponential moving average of the weights and of the buffers (so the batch-norm running
    statistics are averaged too), updated after every optimizer step from ``start_step`` on:
    ``average = decay * average + (1 - decay) * weights``, the decay held lower in the first
    steps when ``warmup`` (``ema_decay``).

    With the default decay 0.999 the average spans about the last 1,000 steps (one epoch of the
    Kaggle train set at batch size 32).
    """

    def __init__(
        self, decay: float = 0.999, start_step: int = 0, warmup: bool = True, device: Any = None
    ) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        if start_step < 0:
            raise ValueError(f"EMA start_step must be >= 0, got {start_step}")
        average = _ema_with_warmup(decay) if warmup else get_ema_multi_avg_fn(decay)
        super().__init__(device=device, use_buffers=True, multi_avg_fn=average)
        self.decay = decay
        self.start_step = start_step
        self.warmup = warmup

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return step_idx is not None and step_idx >= self.start_step


class SWAWeights(_EvaluateAverage):
    """Stochastic weight averaging: the equal average of the weights at the end of each epoch from
    ``start_epoch`` on (pudae, 3rd in 2018, averaged his last 10 epochs' checkpoints), with the
    batch-norm statistics recomputed for the averaged weights by a forward pass over the train
    loader (``torch.optim.swa_utils.update_bn``; at most ``bn_update_batches`` batches, None for
    the epoch's) each time the average changes.

    ``start_epoch``: an epoch index, or a float in (0, 1) for that fraction of ``max_epochs``.
    The learning-rate schedule is left as configured.

    The average is updated at the last batch of the epoch, before that epoch's validation, so the
    validation and checkpoint of an epoch include its weights.
    """

    def __init__(
        self,
        start_epoch: int | float = 0.5,
        bn_update_batches: int | None = None,
        device: Any = None,
    ) -> None:
        is_fraction = isinstance(start_epoch, float) and 0.0 < start_epoch < 1.0
        if not is_fraction and not (isinstance(start_epoch, int) and start_epoch >= 0):
            raise ValueError(
                f"SWA start_epoch must be an epoch index >= 0 or a fraction in (0, 1), "
                f"got {start_epoch!r}"
            )
        if bn_update_batches is not None and bn_update_batches < 1:
            raise ValueError(f"bn_update_batches must be >= 1 or None, got {bn_update_batches}")
        # use_buffers=False: the average's buffers follow the module's, then update_bn resets
        # and recomputes the batch-norm statistics.
        super().__init__(device=device, use_buffers=False)
        self.start_epoch = start_epoch
        self.bn_update_batches = bn_update_batches

    def first_epoch(self, trainer: pl.Trainer) -> int:
        if isinstance(self.start_epoch, int):
            return self.start_epoch
        if trainer.max_epochs is None or trainer.max_epochs < 1:
            raise ValueError("SWA start_epoch as a fraction needs trainer.max_epochs")
        return int(trainer.max_epochs * self.start_epoch)

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        # The base class's own update points (after each step, after each epoch's validation)
        # are not used: on_train_batch_end updates at the epoch's last batch.
        return False

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        last_batch = batch_idx + 1 >= trainer.num_training_batches
        if not last_batch or trainer.current_epoch < self.first_epoch(trainer):
            return
        assert self._average_model is not None
        self._average_model.update_parameters(pl_module)
        self._update_batch_norm(trainer)

    def _update_batch_norm(self, trainer: pl.Trainer) -> None:
        model = self._average_model.module
        limits = [trainer.num_training_batches, self.bn_update_batches or math.inf]
        num_batches = None if math.isinf(min(limits)) else int(min(limits))  # None: all of them
        log.info("SWA: batch-norm statistics of the average from %s train batches", num_batches)
        recompute_batch_norm(
            model,
            trainer.train_dataloader,
            num_batches,
            next(model.parameters()).device,
            trainer.precision_plugin.forward_context(),
        )


def recompute_batch_norm(
    model: torch.nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor]],
    num_batches: int | None,
    device: torch.device,
    forward_context: AbstractContextManager | None = None,
) -> None:
    """Reset the batch-norm running statistics of ``model`` and recompute them, as their plain
    average over the images of the first ``num_batches`` of ``batches`` (None: all), on
    ``device`` (``torch.optim.swa_utils.update_bn``). ``forward_context``: the trainer's
    precision context."""
    images = (batch["image"].to(device) for batch in islice(batches, num_batches))
    with torch.no_grad(), forward_context or nullcontext():
        update_bn(images, model)


def average_state_dicts(states: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The equal average of the floating-point entries of ``states`` (weights and float buffers);
    other entries (batch-norm step counters) are the last state's. HPAInputError unless all
    have the same entries and shapes."""
    if not states:
        raise ValueError("no states to average")
    last = states[-1]
    for index, state in enumerate(states):
        if state.keys() != last.keys():
            differing = sorted(set(state) ^ set(last))
            raise HPAInputError(f"state {index} has other entries than the last: {differing[:3]}")
        for name, value in state.items():
            if value.shape != last[name].shape:
                raise HPAInputError(
                    f"state {index}: {name} is {tuple(value.shape)}, {tuple(last[name].shape)} "
                    "in the last"
                )
    averaged = {}
    for name, value in last.items():
        if value.is_floating_point():
            stacked = torch.stack([state[name].double() for state in states])
            averaged[name] = stacked.mean(dim=0).to(value.dtype)
        else:
            averaged[name] = value.clone()
    return averaged
