"""`model.init_from=CKPT`: a second stage starts from a checkpoint's network weights, only them,
and a checkpoint of another network is refused before any training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from cli import SMALL_SYNTHETIC_SET, run_module
from test_configs import compose_train
from test_losses import cpu_trainer, tiny_loader

from hpa.core.errors import HPAInputError
from hpa.core.labels import HPA2018, LabelSet
from hpa.data.class_statistics import ClassStatistics
from hpa.models.checkpoints import initialize_from
from hpa.models.module import HPAModule
from hpa.run import builders


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory) -> Path:
    """A seed CNN checkpoint after two training steps (weights away from their init)."""
    folder = tmp_path_factory.mktemp("stage1")
    module = HPAModule(name="seed_cnn", channel_mean=(0.1,) * 4, channel_std=(0.2,) * 4)
    trainer = cpu_trainer(folder, max_steps=2, limit_val_batches=0, enable_checkpointing=False)
    trainer.fit(module, train_dataloaders=tiny_loader(2))
    path = folder / "stage1.ckpt"
    trainer.save_checkpoint(path)
    return path


def test_init_from_copies_the_network_weights_and_nothing_else(trained_checkpoint: Path):
    trained = torch.load(trained_checkpoint, weights_only=True)["state_dict"]
    module = HPAModule(name="seed_cnn", channel_mean=(0.3,) * 4, threshold=0.4)
    initialize_from(module, trained_checkpoint)
    state = module.state_dict()
    network = [name for name in trained if name.startswith("backbone.")]
    assert len(network) > 20
    for name in network:
        torch.testing.assert_close(state[name], trained[name], msg=name)
    # the second stage keeps its own channel statistics and thresholds
    torch.testing.assert_close(state["channel_mean"], torch.full((1, 4, 1, 1), 0.3))
    torch.testing.assert_close(state["class_thresholds"], torch.full((28,), 0.4))
    assert not torch.equal(trained["channel_mean"], state["channel_mean"])


def test_another_network_or_other_shapes_are_refused(trained_checkpoint: Path):
    with pytest.raises(HPAInputError, match="holds a seed_cnn network, this run builds resnet18"):
        initialize_from(HPAModule(name="resnet18"), trained_checkpoint)
    ten_classes = LabelSet("ten", tuple(f"class {i}" for i in range(10)))
    other_head = HPAModule(name="seed_cnn", labels=ten_classes.to_dict())
    before = {name: value.clone() for name, value in other_head.state_dict().items()}
    with pytest.raises(HPAInputError) as refused:
        initialize_from(other_head, trained_checkpoint)
    message = str(refused.value)
    assert str(trained_checkpoint) in message
    assert "backbone.classifier.7.weight is (28, 64) there, (10, 64) here" in message
    for name, value in other_head.state_dict().items():  # nothing was copied
        assert torch.equal(value, before[name]), name
    with pytest.raises(HPAInputError, match="does not exist"):
        initialize_from(HPAModule(name="seed_cnn"), trained_checkpoint.parent / "none.ckpt")


class _Statistics:
    """What build_module reads of a set-up data module: its label set and the statistics of
    its train split."""

    label_set = HPA2018
    channel_mean = np.full(4, 0.5, dtype=np.float32)
    channel_std = np.full(4, 0.25, dtype=np.float32)
    class_statistics = ClassStatistics(HPA2018, np.arange(1, 29), 100)


def test_build_module_starts_from_the_checkpoint_without_pretrained_weights(
    trained_checkpoint: Path, tmp_path: Path
):
    cfg = compose_train(
        [
            "model=cnn",
            f"model.init_from={trained_checkpoint}",
            "optimizer.lr=0.01",
            "scheduler=none",
        ],
        tmp_path,
    )
    module = builders.build_module(cfg, _Statistics())
    trained = torch.load(trained_checkpoint, weights_only=True)["state_dict"]
    torch.testing.assert_close(
        module.state_dict()["backbone.features.0.0.weight"],
        trained["backbone.features.0.0.weight"],
    )
    assert module.hparams.init_from == str(trained_checkpoint)
    assert module.hparams.pretrained is False
    torch.testing.assert_close(module.channel_mean.flatten(), torch.full((4,), 0.5))
    # a new optimizer, at this run's settings
    optimizer = module.configure_optimizers()
    assert optimizer.param_groups[0]["lr"] == 0.01 and not optimizer.state


@pytest.mark.slow
def test_a_second_stage_at_a_higher_resolution(tmp_path: Path):
    common = (f"paths.data_dir={tmp_path / 'data'}", *SMALL_SYNTHETIC_SET, "debug=fast")
    first = run_module("hpa.train", f"hydra.run.dir={tmp_path / 'one'}", *common, "model=cnn")
    assert first.returncode == 0, first.stderr[-3000:]
    checkpoint = tmp_path / "one" / "checkpoints" / "best.ckpt"
    second = run_module(
        "hpa.train",
        f"hydra.run.dir={tmp_path / 'two'}",
        *common,
        "model=cnn",
        "data.image_size=80",
        f"model.init_from={checkpoint}",
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert "initialised the 30 network weights" in second.stdout + second.stderr
    saved = torch.load(tmp_path / "two" / "checkpoints" / "best.ckpt", weights_only=True)
    assert saved["hyper_parameters"]["init_from"] == str(checkpoint)

    refused = run_module(
        "hpa.train",
        f"hydra.run.dir={tmp_path / 'three'}",
        *common,
        "model=resnet18",
        f"model.init_from={checkpoint}",
    )
    output = refused.stdout + refused.stderr
    assert refused.returncode == 2, output[-3000:]
    assert "does not fit this model" in output and "Traceback" not in output
    assert not (tmp_path / "three" / "checkpoints").exists()  # refused before any training
