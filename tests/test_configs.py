"""Every option of every config group, and every experiment, composes and resolves."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cli import run_module
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict
from omegaconf.errors import InterpolationResolutionError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
GROUPS = [
    "labels",
    "data",
    "augment",
    "model",
    "loss",
    "optimizer",
    "scheduler",
    "trainer",
    "callbacks",
    "logger",
    "segment",
    "cells",
    "paths",
    "hydra",
    "experiment",
    "hparams_search",
    "debug",
]


def group_options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))


def compose_train(overrides: list[str], tmp_path: Path):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
        cfg.paths.root_dir = str(tmp_path)
    return cfg


def resolved(cfg) -> dict:
    """Resolve the job config (not Hydra's own node, which needs a running job)."""
    job = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    return OmegaConf.to_container(job, resolve=True, throw_on_missing=False)


def test_every_group_in_the_defaults_list_has_options():
    defaults = OmegaConf.load(CONF_DIR / "train.yaml").defaults
    keys = [next(iter(entry)) for entry in defaults if entry != "_self_"]
    # `override hydra/help: train` picks Hydra's own help template, not a group of ours
    named = {key.replace("optional ", "") for key in keys if not key.startswith("override ")}
    assert set(GROUPS) == named
    for group in GROUPS:
        assert group_options(group), f"conf/{group}/ has no options"


@pytest.mark.parametrize(
    "group,option",
    [(group, option) for group in GROUPS for option in group_options(group)],
)
def test_option_composes_and_resolves(group: str, option: str, tmp_path: Path):
    overrides = [f"{group}={option}"]
    if option in ("hpa", "hpa2021") or group == "experiment":
        overrides.append("data.root=/some/hpa")
    cfg = compose_train(overrides, tmp_path)
    job = resolved(cfg)
    assert job["seed"] == 0
    assert job["task_name"] in {"train", "debug", "single_cell"}
    assert isinstance(job["data"]["root"], str) and job["data"]["root"]
    if job.get("scheduler"):
        assert job["scheduler"]["_partial_"] is True
    assert job["optimizer"]["_partial_"] is True


def test_experiment_overrides_take_effect(tmp_path: Path):
    job = resolved(compose_train(["experiment=seed_resnet50_oversample"], tmp_path))
    assert job["model"]["name"] == "resnet50"
    assert job["model"]["pretrained"] is True
    assert job["data"]["oversample"] is True
    winners = resolved(compose_train(["experiment=winners_densenet121"], tmp_path))
    assert winners["model"]["name"] == "densenet121"
    assert winners["loss"]["_target_"].endswith("FocalLoss")
    assert winners["data"]["image_size"] == 512


def test_the_defaults_oversample_and_train_on_crops_of_images_read_at_one_and_a_quarter(
    tmp_path: Path,
):
    job = resolved(compose_train([], tmp_path))
    assert job["loss"]["_target_"].endswith("WeightedSum")
    assert job["loss"]["terms"].keys() == {"focal", "lovasz"}
    assert job["data"]["oversample"] is True
    sampler = job["data"]["sampler"]
    assert (sampler["strategy"], sampler["power"], sampler["draws"]) == (
        "inverse_frequency",
        0.25,
        "repeat",
    )
    assert (job["data"]["image_size"], job["data"]["load_size"]) == (128, 160)
    # the read size follows the image size asked for; null reads whole images
    bigger = resolved(compose_train(["data=hpa", "data.root=/nowhere"], tmp_path))["data"]
    assert (bigger["image_size"], bigger["load_size"]) == (512, 640)
    whole = resolved(compose_train(["data.load_size=null"], tmp_path))["data"]
    assert whole["load_size"] is None
    # the recipe names today's defaults; the experiments that replicate a source keep theirs
    recipe = resolved(compose_train(["experiment=tuned_recipe"], tmp_path))
    for key in ("loss", "model"):
        assert recipe[key] == job[key], key
    assert {**recipe["data"], "synthetic": None} == {**job["data"], "synthetic": None}
    for name in ("seed_cnn_baseline", "seed_resnet50_oversample", "winners_densenet121"):
        assert (
            resolved(compose_train([f"experiment={name}"], tmp_path))["data"]["load_size"] is None
        )
    seed = resolved(compose_train(["experiment=seed_resnet50_oversample"], tmp_path))["data"]
    assert seed["sampler"]["strategy"] == "minority"
    cells = resolved(compose_train(["experiment=single_cell"], tmp_path))
    assert (cells["data"]["oversample"], cells["data"]["load_size"]) == (False, None)
    assert cells["loss"]["pos_weight"] == "balanced"


@pytest.mark.parametrize(
    "arguments,problem",
    [("128,0", "both must be positive"), ("-8,1.25", "both must be positive"), ("a,2", "numbers")],
)
def test_a_bad_scaled_size_is_refused_by_name(arguments: str, problem: str):
    config = OmegaConf.create({"load_size": "${hpa.scaled:" + arguments + "}"})
    # OmegaConf names the key and wraps hpa's message
    with pytest.raises(
        InterpolationResolutionError, match=rf"hpa\.scaled.*{problem}(.|\n)*load_size"
    ):
        OmegaConf.to_container(config, resolve=True)


def test_debug_fast_drops_the_logger_and_shortens_the_run(tmp_path: Path):
    job = resolved(compose_train(["debug=fast"], tmp_path))
    assert job["logger"] is None
    assert job["trainer"]["max_epochs"] == 1
    assert job["trainer"]["limit_train_batches"] == 4


def test_any_timm_model_by_name(tmp_path: Path):
    job = resolved(compose_train(["model.name=convnext_atto"], tmp_path))
    assert job["model"]["name"] == "convnext_atto"
    assert job["model"]["_target_"] == "hpa.models.module.HPAModule"


def test_seed_zero_is_kept_and_null_is_allowed(tmp_path: Path):
    assert resolved(compose_train(["seed=0"], tmp_path))["data"]["split_seed"] == 0
    assert resolved(compose_train(["seed=null"], tmp_path))["seed"] is None


@pytest.mark.parametrize(
    "module,usage,absent",
    [
        ("hpa.train", "Usage: hpa-train", None),
        ("hpa.eval", "Usage: hpa-eval ckpt_path=", "augment"),
        ("hpa.predict", "Usage: hpa-predict ckpt_path=", "augment"),
        ("hpa.average", "Usage: hpa-average", "augment"),
    ],
)
def test_each_entry_point_has_its_own_help(module: str, usage: str, absent: str | None):
    result = run_module(module, "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    assert usage in result.stdout and "Examples:" in result.stdout
    assert "trainer:" in result.stdout
    if absent:  # lists only the groups this entry point accepts
        assert absent not in result.stdout


@pytest.mark.parametrize("module", ["hpa.train", "hpa.eval", "hpa.predict", "hpa.average"])
def test_help_and_completion_do_not_load_the_training_stack(module: str):
    # --help, shell completion and refused overrides answer before torch, Lightning and timm load
    script = (
        "import sys, runpy\n"
        "try:\n"
        f"    runpy.run_module({module!r}, run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('loaded:', sorted({'torch', 'pytorch_lightning', 'timm'} & set(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, "--help"], capture_output=True, text=True, check=True
    )
    assert "Usage: hpa-" in result.stdout
    assert "loaded: []" in result.stdout


def test_the_2018_recipes_set_their_teams_settings(tmp_path: Path):
    best = resolved(compose_train(["experiment=bestfitting_2018"], tmp_path))
    assert best["model"]["name"] == "densenet121" and best["model"]["pretrained"] is True
    assert (best["data"]["image_size"], best["data"]["load_size"]) == (512, 768)
    assert best["loss"]["terms"].keys() == {"focal", "lovasz", "ohem"}
    assert best["data"]["oversample"] is False
    assert best["optimizer"]["_target_"] == "torch.optim.Adam"
    assert best["scheduler"]["milestones"] == [25, 30, 35, 40]
    assert best["trainer"]["max_epochs"] == 45 and best["trainer"]["gradient_clip_val"] == 1.0
    assert (best["model"]["tta"], best["model"]["tta_reduce"]) == ("dihedral", "max")

    pudae = resolved(compose_train(["experiment=pudae_2018"], tmp_path))
    assert pudae["model"]["name"] == "resnet34" and pudae["model"]["pretrained"] is True
    assert pudae["data"]["image_size"] == 512 and pudae["data"]["load_size"] is None
    assert pudae["loss"]["_target_"].endswith("FocalLoss")
    assert pudae["scheduler"] is None and pudae["optimizer"]["lr"] == 5.0e-4
    assert pudae["callbacks"]["epoch_checkpoints"]["keep_last"] == 10
    assert pudae["callbacks"]["early_stopping"] is None
    assert pudae["trainer"]["max_epochs"] == 41
    assert pudae["data"]["normalize"]["mean"] == [0.5] * 4
    assert pudae["data"]["normalize"]["std"] == [1.0] * 4


def test_every_recipe_line_names_its_source():
    for name in ("bestfitting_2018", "pudae_2018"):
        lines = (CONF_DIR / "experiment" / f"{name}.yaml").read_text().splitlines()
        settings = [line for line in lines if ":" in line and not line.lstrip().startswith("#")]
        sourced = [line for line in settings if "#" in line]
        # every setting, bar the section keys (`model:`) and the tags, says where it comes from
        unsourced = [
            line
            for line in settings
            if line not in sourced and not line.rstrip().endswith(":") and "tags" not in line
        ]
        assert unsourced == [], name


def test_the_average_entry_point_composes(tmp_path: Path):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("average", overrides=["run_dir=/some/run", "trainer=gpu"])
    assert cfg.last == 5 and cfg.run_dir == "/some/run"
    assert cfg.trainer.accelerator == "gpu"


ENTRY_CONFIGS = {
    "train": [],
    "eval": ["ckpt_path=/runs/a/checkpoints/best.ckpt"],
    "predict": ["ckpt_path=/runs/a/checkpoints/best.ckpt", "data.root=/some/hpa"],
    "explain": ["ckpt_path=/runs/a/checkpoints/best.ckpt", "ids=[a,b]", "classes=all"],
    "export": ["ckpt_path=/runs/a/checkpoints/best.ckpt", "output=/models/a.onnx"],
}


@pytest.mark.parametrize("name", sorted(ENTRY_CONFIGS))
def test_every_entry_config_composes_with_its_help(name: str, tmp_path: Path):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(name, overrides=ENTRY_CONFIGS[name], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
        cfg.paths.root_dir = str(tmp_path)
    job = resolved(cfg)
    assert job["task_name"] == name and cfg.hydra.job.name == name
    assert cfg.hydra.help.app_name == f"hpa-{name}"
    assert f"hpa-{name}" in cfg.hydra.help.header
    assert (CONF_DIR / "hydra" / "help" / f"{name}.yaml").is_file()
    assert f'hpa-{name} = "hpa.{name}:main"' in (CONF_DIR.parent / "pyproject.toml").read_text()


def test_explain_and_export_defaults(tmp_path: Path):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        explain = compose("explain", overrides=["ckpt_path=x", "classes=true", "method=gradcam++"])
        export = compose("export", overrides=["ckpt_path=x"])
    assert explain.ids is None and explain.data.root is None and explain.num_images == 4
    assert explain.method == "gradcam++"  # `+` needs no quoting on the command line
    assert explain.classes is True  # YAML's true: hpa.run.explaining reads it as "true"
    assert export.format == "onnx" and export.output is None and export.tolerance == 1e-4
