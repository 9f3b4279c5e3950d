"""EMA and SWA of the weights: the average is what validation, checkpoints and later use see."""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from cli import run_module
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from test_configs import CONF_DIR, compose_train
from test_losses import cpu_trainer, tiny_loader
from test_train import run_train
from torch.optim.swa_utils import update_bn

from hpa.core.metric_names import TEST_F1_MACRO, TEST_LOSS, VAL_F1_MACRO, VAL_LOSS
from hpa.core.thresholds_file import load_thresholds
from hpa.models.averaging import EMAWeights, SWAWeights, ema_decay
from hpa.models.checkpoints import load_module
from hpa.models.module import HPAModule
from hpa.run.builders import build_callbacks


class RawWeights(pl.Callback):
    """Copies of the module's raw state after every optimizer step, and the validation loss of
    every epoch."""

    def __init__(self) -> None:
        self.steps: list[dict[str, torch.Tensor]] = []
        self.epochs: list[dict[str, torch.Tensor]] = []  # the state after each epoch's last step
        self.val_losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps.append({name: value.clone() for name, value in pl_module.state_dict().items()})

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.epochs.append(self.steps[-1])

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.val_losses.append(float(trainer.callback_metrics[VAL_LOSS]))


def float_entries(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: value for name, value in state.items() if value.is_floating_point()}


def assert_states_close(actual: dict, expected: dict) -> None:
    actual, expected = float_entries(actual), float_entries(expected)
    assert actual.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], msg=name)


def fit_with(callback: pl.Callback, tmp_path: Path, max_epochs: int, **trainer_kwargs):
    """Fit a seed CNN for ``max_epochs`` epochs of 4 batches, a checkpoint saved after each."""
    module = HPAModule(name="seed_cnn")
    raw = RawWeights()
    checkpoints = ModelCheckpoint(
        dirpath=tmp_path / "checkpoints", filename="{epoch}", save_top_k=-1
    )
    trainer = cpu_trainer(
        tmp_path, max_epochs=max_epochs, callbacks=[raw, callback, checkpoints], **trainer_kwargs
    )
    trainer.fit(module, train_dataloaders=tiny_loader(4), val_dataloaders=tiny_loader(1, seed=1))
    return trainer, module, raw


def saved(tmp_path: Path, epoch: int) -> dict:
    """The checkpoint saved after ``epoch``, and its path."""
    path = tmp_path / "checkpoints" / f"epoch={epoch}.ckpt"
    return {"path": path, **torch.load(path, map_location="cpu", weights_only=True)}


def ema_of(steps: list[dict], decay: float, warmup: bool = True) -> dict[str, torch.Tensor]:
    """The EMA of ``steps`` by hand; with ``warmup`` the update after n averaged steps uses a
    decay of min(decay, (1 + n) / (10 + n))."""
    average = dict(float_entries(steps[0]))
    for num_averaged, step in enumerate(steps[1:], start=1):
        d = min(decay, (1 + num_averaged) / (10 + num_averaged)) if warmup else decay
        average = {name: d * value + (1 - d) * step[name] for name, value in average.items()}
    return average


def validation_loss(module: HPAModule) -> float:
    batch = next(iter(tiny_loader(1, seed=1)))
    module.eval()
    with torch.no_grad():
        return float(module.criterion(module(batch["image"]), batch["target"]))


def test_ema_is_validated_checkpointed_and_used_after_fit(tmp_path: Path) -> None:
    trainer, module, raw = fit_with(EMAWeights(decay=0.5), tmp_path, max_epochs=2)
    assert len(raw.steps) == 8

    first = saved(tmp_path, 0)
    # the checkpoint's weights are the EMA of the first epoch's 4 steps, batch-norm statistics too
    assert_states_close(first["state_dict"], ema_of(raw.steps[:4], decay=0.5))
    assert_states_close(first["current_model_state"], raw.steps[3])
    assert int(first["averaging_state"]["n_averaged"]) == 4
    changed = [
        name
        for name, value in float_entries(first["state_dict"]).items()
        if not torch.equal(value, raw.steps[3][name])
    ]
    assert "backbone.features.0.0.weight" in changed
    assert "backbone.features.0.1.running_mean" in changed
    # validation ran on the average: its loss is that of the checkpoint's weights
    averaged = load_module(first["path"])
    assert raw.val_losses[0] == pytest.approx(validation_loss(averaged))
    assert raw.val_losses[0] != pytest.approx(raw.val_losses[1])  # the epochs differ
    # after fit the module holds the average of all 8 steps
    assert_states_close(module.state_dict(), ema_of(raw.steps, decay=0.5))

    # validate, test and predict on the first epoch's checkpoint use its averaged weights
    loader = tiny_loader(1, seed=1)
    validated = trainer.validate(module, loader, ckpt_path=first["path"], verbose=False)
    tested = trainer.test(module, loader, ckpt_path=first["path"], verbose=False)
    predicted = trainer.predict(module, loader, ckpt_path=first["path"])

    assert validated[0][VAL_LOSS] == pytest.approx(raw.val_losses[0])
    assert tested[0][TEST_LOSS] == pytest.approx(raw.val_losses[0])
    with torch.no_grad():
        expected = torch.sigmoid(averaged.eval()(next(iter(loader))["image"]))
    torch.testing.assert_close(predicted[0], expected)
    assert_states_close(module.state_dict(), first["state_dict"])


def test_swa_averages_the_epochs_and_recomputes_batch_norm(tmp_path: Path) -> None:
    # fewer batches than the loader holds: the batch-norm pass takes the epoch's 3
    trainer, module, raw = fit_with(
        SWAWeights(start_epoch=1),
        tmp_path,
        max_epochs=3,
        limit_train_batches=3,
    )
    assert len(raw.epochs) == 3

    # before start_epoch nothing is averaged: epoch 0 was validated and saved with raw weights
    assert_states_close(saved(tmp_path, 0)["state_dict"], raw.epochs[0])
    second, last = saved(tmp_path, 1), saved(tmp_path, 2)
    assert_states_close(second["current_model_state"], raw.epochs[1])
    assert int(last["averaging_state"]["n_averaged"]) == 2

    # parameters: the equal average of the weights at the end of epochs 1 and 2
    expected = HPAModule(name="seed_cnn")
    expected.load_state_dict(raw.epochs[2])
    with torch.no_grad():
        for name, parameter in expected.named_parameters():
            parameter.copy_((raw.epochs[1][name] + raw.epochs[2][name]) / 2)
    # buffers: batch-norm statistics of those weights over the epoch's 3 train batches
    update_bn((batch["image"] for batch in islice(tiny_loader(4), 3)), expected)
    assert_states_close(last["state_dict"], expected.state_dict())
    assert not torch.equal(
        last["state_dict"]["backbone.features.0.1.running_var"],
        raw.epochs[2]["backbone.features.0.1.running_var"],
    )
    assert raw.val_losses[2] == pytest.approx(validation_loss(load_module(last["path"])))


def test_swa_with_persistent_loader_workers(tmp_path: Path) -> None:
    # the batch-norm pass iterates the train loader again, at the epoch's last batch, when the
    # epoch's own iterator has stopped at limit_train_batches, mid-way through the loader
    module = HPAModule(name="seed_cnn")
    trainer = cpu_trainer(
        tmp_path,
        max_epochs=2,
        limit_train_batches=2,
        limit_val_batches=0,
        callbacks=[SWAWeights(start_epoch=0, bn_update_batches=1)],
        enable_checkpointing=False,
    )
    loader = tiny_loader(4, num_workers=1, persistent_workers=True)
    trainer.fit(module, train_dataloaders=loader)
    assert trainer.global_step == 4


def test_ema_without_warmup_is_the_plain_average(tmp_path: Path) -> None:
    _, module, raw = fit_with(EMAWeights(decay=0.5, warmup=False), tmp_path, max_epochs=1)
    assert_states_close(module.state_dict(), ema_of(raw.steps, decay=0.5, warmup=False))
    # the warm-up's decay differs from 0.5 at every one of these steps
    assert not torch.allclose(
        ema_of(raw.steps, decay=0.5)["backbone.features.0.0.weight"],
        ema_of(raw.steps, decay=0.5, warmup=False)["backbone.features.0.0.weight"],
    )


def test_ema_warmup_lets_the_init_fade_in_a_short_run() -> None:
    assert ema_decay(0.98, 1, warmup=True) == pytest.approx(2 / 11)
    assert ema_decay(0.98, 90, warmup=True) == pytest.approx(0.91)
    assert ema_decay(0.98, 10_000, warmup=True) == 0.98
    assert ema_decay(0.98, 1, warmup=False) == 0.98
    # the weight left on the first (random-init) step after 130 updates, decay 0.98
    with_warmup = np.prod([ema_decay(0.98, n, warmup=True) for n in range(1, 131)])
    assert with_warmup < 1e-3 < 0.98**130


def test_resume_continues_from_the_raw_weights_and_the_average(tmp_path: Path) -> None:
    _, _, first_run = fit_with(EMAWeights(decay=0.5), tmp_path / "first", max_epochs=1)
    first = saved(tmp_path / "first", 0)

    raw = RawWeights()
    trainer = cpu_trainer(
        tmp_path,
        max_epochs=2,
        callbacks=[raw, EMAWeights(decay=0.5), ModelCheckpoint(dirpath=tmp_path, filename="last")],
    )
    module = HPAModule(name="seed_cnn")
    trainer.fit(module, tiny_loader(4), tiny_loader(1, seed=1), ckpt_path=first["path"])

    resumed = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=True)
    assert int(resumed["averaging_state"]["n_averaged"]) == 8
    assert_states_close(resumed["state_dict"], ema_of(first_run.steps + raw.steps, decay=0.5))
    # the second run trained on from the raw weights, not from the average
    assert_states_close(resumed["current_model_state"], raw.steps[-1])
    assert trainer.global_step == 8


@pytest.mark.parametrize(
    "make",
    [
        lambda: EMAWeights(decay=1.5),
        lambda: EMAWeights(start_step=-1),
        lambda: SWAWeights(start_epoch=1.5),
        lambda: SWAWeights(start_epoch=-1),
        lambda: SWAWeights(bn_update_batches=0),
    ],
)
def test_bad_settings_are_refused(make) -> None:
    with pytest.raises(ValueError):
        make()


@pytest.mark.parametrize(
    "option,setting,value,averaging",
    [("ema", "decay", 0.99, EMAWeights), ("swa", "start_epoch", 2, SWAWeights)],
)
def test_callback_options_add_to_the_default_callbacks(
    option: str, setting: str, value: float, averaging: type, tmp_path: Path
) -> None:
    overrides = [f"callbacks={option}", f"callbacks.weight_averaging.{setting}={value}"]
    cfg = compose_train(overrides, tmp_path)

    default = OmegaConf.load(CONF_DIR / "callbacks" / "default.yaml")
    assert set(cfg.callbacks) == {*default, "weight_averaging"}
    assert cfg.callbacks.model_checkpoint == default.model_checkpoint
    assert cfg.callbacks.early_stopping == default.early_stopping
    averaging_callback = build_callbacks(cfg)[-1]
    assert isinstance(averaging_callback, averaging)
    assert getattr(averaging_callback, setting) == value


def checkpoint_of(run_dir: Path) -> dict:
    path = run_dir / "checkpoints" / "best.ckpt"
    return torch.load(path, map_location="cpu", weights_only=True)


def best_score(checkpoint: dict) -> float:
    states = [state for key, state in checkpoint["callbacks"].items() if "ModelCheckpoint" in key]
    return float(states[0]["best_model_score"])


@pytest.mark.slow
def test_train_cli_with_ema_evaluates_and_saves_the_average(tmp_path: Path) -> None:
    run_train(
        tmp_path, "debug=fast", "model=cnn", "callbacks=ema", "trainer.limit_test_batches=1.0"
    )
    run_dir = tmp_path / "run"
    checkpoint = checkpoint_of(run_dir)
    assert int(checkpoint["averaging_state"]["n_averaged"]) == 4  # every step of the run
    average, raw = checkpoint["state_dict"], checkpoint["current_model_state"]
    assert not torch.equal(
        average["backbone.features.0.0.weight"], raw["backbone.features.0.0.weight"]
    )
    # the final validation of best.ckpt scores what the checkpoint callback saw during fit
    final = json.loads((run_dir / "metrics.json").read_text())
    assert final[VAL_F1_MACRO] == pytest.approx(best_score(checkpoint), abs=1e-6)

    # hpa.eval on best.ckpt (its state_dict: the average) reproduces the run's test metrics
    result = run_module(
        "hpa.eval",
        f"ckpt_path={run_dir / 'checkpoints' / 'best.ckpt'}",
        f"hydra.run.dir={tmp_path / 'eval'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    for name in (TEST_F1_MACRO, TEST_LOSS):
        assert evaluated[name] == pytest.approx(final[name], abs=1e-6)


@pytest.mark.slow
def test_train_cli_with_swa_saves_the_average(tmp_path: Path) -> None:
    run_train(
        tmp_path,
        "debug=fast",
        "model=cnn",
        "callbacks=swa",
        "callbacks.weight_averaging.start_epoch=0",
        "trainer.max_epochs=2",
        # best.ckpt: the latest epoch's (Lightning 2.6 writes last.ckpt only with a new best)
        "callbacks.model_checkpoint.monitor=null",
    )
    run_dir = tmp_path / "run"
    checkpoint = checkpoint_of(run_dir)
    assert checkpoint["epoch"] == 1
    assert int(checkpoint["averaging_state"]["n_averaged"]) == 2  # the end of both epochs
    average, raw = checkpoint["state_dict"], checkpoint["current_model_state"]
    for name in ("backbone.features.0.0.weight", "backbone.features.0.1.running_mean"):
        assert not torch.equal(average[name], raw[name])
    # the tuned thresholds went into the averaged state_dict that eval and predict load
    thresholds = load_thresholds(run_dir / "thresholds.json")
    np.testing.assert_allclose(average["class_thresholds"].numpy(), thresholds, atol=1e-6)
