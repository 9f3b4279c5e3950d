"""`callbacks=finetune`: Lightning's BackboneFinetuning freezes the network but its classifier for
the first epochs, then trains it too, in a parameter group of its own."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from test_configs import CONF_DIR, compose_train
from test_losses import cpu_trainer, tiny_loader
from test_train import run_train
from torch import nn

from hpa.models.averaging import EMAWeights
from hpa.models.finetuning import BackboneFinetuning
from hpa.models.module import HPAModule
from hpa.run.builders import build_callbacks


@pytest.mark.parametrize("name", ["seed_cnn", "resnet18"])
def test_feature_modules_and_classifier_split_the_parameters(name: str):
    module = HPAModule(name=name)
    classifier = {id(p) for p in module.classifier().parameters()}
    features = {id(p) for m in module.feature_modules() for p in m.parameters(recurse=False)}
    everything = {id(p) for p in module.parameters()}
    assert classifier and features
    assert not classifier & features
    assert classifier | features == everything
    assert isinstance(module.classifier(), nn.Module)
    expected = "backbone.fc" if name == "resnet18" else "backbone.classifier"
    assert module.get_submodule(expected) is module.classifier()


class ParameterProbe(pl.Callback):
    """The module's parameters at the end of every epoch, and the optimizer's groups."""

    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []
        self.groups: list[list[tuple[int, float]]] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.states.append({n: p.detach().clone() for n, p in pl_module.named_parameters()})
        optimizer = trainer.optimizers[0]
        self.groups.append([(len(g["params"]), g["lr"]) for g in optimizer.param_groups])


def test_the_backbone_is_frozen_then_trains_in_a_group_of_its_own(tmp_path: Path):
    torch.manual_seed(0)
    module = HPAModule(
        name="seed_cnn", optimizer={"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1}
    )
    initial = {n: p.detach().clone() for n, p in module.named_parameters()}
    probe = ParameterProbe()
    finetuning = BackboneFinetuning(unfreeze_backbone_at_epoch=1, backbone_initial_ratio_lr=0.1)
    trainer = cpu_trainer(
        tmp_path,
        max_epochs=3,
        limit_val_batches=0,
        enable_checkpointing=False,
        callbacks=[finetuning, probe],
    )
    trainer.fit(module, train_dataloaders=tiny_loader(2))

    classifier = {f"backbone.classifier.{n}" for n, _ in module.classifier().named_parameters()}
    # the seed CNN's blocks: features.<block>.0 is a conv, features.<block>.1 a batch norm
    convolutions = [n for n in initial if re.fullmatch(r"backbone\.features\.\d\.0\.weight", n)]
    batch_norms = [n for n in initial if re.fullmatch(r"backbone\.features\.\d\.1\.\w+", n)]
    assert convolutions and batch_norms
    # epoch 0: only the classifier (and the batch norms, train_bn) learned
    changed = {n for n in initial if not torch.equal(probe.states[0][n], initial[n])}
    assert classifier <= changed
    assert not set(convolutions) & changed
    assert set(batch_norms) <= changed
    # epochs 1 and 2: the convolutions learn too, in a second group at a tenth of the rate, doubled
    for name in convolutions:
        assert not torch.equal(probe.states[1][name], probe.states[0][name]), name
    first, second = probe.groups[0], probe.groups[1]
    assert len(first) == 1
    assert len(second) == 2 and second[1][0] == len(convolutions)  # convs only: no bias
    assert second[1][1] == pytest.approx(0.1 * 0.1)
    assert probe.groups[2][1][1] == pytest.approx(0.1 * 0.1 * 2)
    assert all(p.requires_grad for p in module.parameters())


def test_finetune_composes_with_the_default_callbacks_and_weight_averaging(tmp_path: Path):
    from omegaconf import OmegaConf

    default = set(OmegaConf.load(CONF_DIR / "callbacks" / "default.yaml"))
    cfg = compose_train(
        ["callbacks=finetune", "callbacks.backbone_finetuning.unfreeze_backbone_at_epoch=2"],
        tmp_path,
    )
    assert set(cfg.callbacks) == default | {"backbone_finetuning"}
    callbacks = build_callbacks(cfg)
    finetuning = [c for c in callbacks if isinstance(c, BackboneFinetuning)]
    assert len(finetuning) == 1 and finetuning[0].unfreeze_backbone_at_epoch == 2

    both = compose_train(["callbacks=[ema,finetune]"], tmp_path)
    assert set(both.callbacks) == default | {"backbone_finetuning", "weight_averaging"}
    kinds = {type(c) for c in build_callbacks(both)}
    assert {EMAWeights, BackboneFinetuning} <= kinds


@pytest.mark.slow
def test_train_cli_with_a_frozen_backbone(tmp_path: Path):
    run_train(tmp_path, "debug=fast", "model=cnn", "callbacks=finetune", "trainer.max_epochs=2")
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert len(checkpoint["optimizer_states"][0]["param_groups"]) == 2  # the backbone joined
    states = [s for k, s in checkpoint["callbacks"].items() if "BackboneFinetuning" in k]
    assert states and states[0]["previous_backbone_lr"] is not None
