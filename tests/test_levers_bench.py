"""The levers benchmark (benchmarks/levers.py): every training row composes into the run it
names, each lever one difference from today's defaults."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from benchmarks.common import train_config
from benchmarks.levers import commands, levers


def _train_overrides(command: list[str]) -> list[str]:
    """A lever's hpa.train overrides, without its run directory."""
    assert command[0] == "hpa.train"
    return [item for item in command[1:] if not item.startswith("hydra.run.dir=")]


def test_every_training_lever_composes_and_differs_from_the_defaults(tmp_path: Path):
    every = {lever.name: lever for lever in levers(3, 96, 3)}
    common = ("data.image_size=64", "trainer.max_epochs=6")
    composed = {}
    for name, lever in every.items():
        if lever.kind == "train":
            (command,) = commands(lever, 0, tmp_path, common)
            composed[name] = OmegaConf.to_container(
                train_config(*_train_overrides(command)), resolve=True
            )
    defaults = composed.pop("defaults")
    assert defaults["callbacks"]["epoch_checkpoints"]["keep_last"] == 3  # for hpa-average
    for name, cfg in composed.items():
        cfg["callbacks"]["epoch_checkpoints"] = defaults["callbacks"]["epoch_checkpoints"]
        assert {**cfg, "tags": None} != {**defaults, "tags": None}, name
    # today's defaults: oversampling, focal + Lovasz, crops of 80 px images (1.25 x 64), the EMA
    assert defaults["data"]["oversample"] is True and defaults["data"]["load_size"] == 80
    assert defaults["loss"]["_target_"].endswith(".WeightedSum")
    assert defaults["callbacks"]["weight_averaging"]["_target_"].endswith(".EMAWeights")
    before = composed["defaults_before_1207"]
    assert before["data"]["oversample"] is False and before["data"]["load_size"] is None
    assert before["loss"]["pos_weight"] == "balanced" and before["model"]["thresholds"] == "rate"
    assert composed["whole_images"]["data"]["load_size"] is None
    assert composed["whole_images"]["data"]["oversample"] is True  # on the defaults
    assert every["dihedral_crops"].base == "defaults"  # the defaults train on crops
    (stage2,) = commands(every["init_from"], 1, tmp_path, common)
    assert f"model.init_from={tmp_path / 'defaults' / 'seed1'}" in " ".join(stage2)
