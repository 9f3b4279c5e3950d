"""Sweeps: the seed experiments as one multirun, Hydra multirun directories, a real Optuna study
in an sqlite file, and the SLURM launcher config."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml
from cli import SMALL_SYNTHETIC_SET, run_module, train_multirun
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from test_configs import CONF_DIR, compose_train, resolved

TINY_RUN = ("debug=fast", "model=cnn", *SMALL_SYNTHETIC_SET)


def sweep_choices(override: str) -> list[str]:
    """The values Hydra's sweeper expands ``override`` into (``glob(...)`` included)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
        (parsed,) = parser.parse_overrides([override])
        return list(parsed.sweep_string_iterator())


def test_glob_of_seed_experiments_composes_every_row_of_the_table(tmp_path: Path):
    experiments = sweep_choices("experiment=glob(seed_*)")
    assert experiments == [
        "seed_cnn_baseline",
        "seed_resnet152_oversample",
        "seed_resnet50_baseline",
        "seed_resnet50_oversample",
    ]
    models = set()
    for experiment in experiments:
        job = resolved(compose_train([f"experiment={experiment}", "data.root=/hpa"], tmp_path))
        assert "seed_report" in job["tags"]
        models.add(job["model"]["name"])
    assert {"resnet50", "resnet152"} < models and len(models) == 3


def test_multirun_puts_each_job_in_its_own_folder_of_one_sweep(tmp_path: Path):
    sweep_dir = tmp_path / "sweep"
    result = train_multirun(
        sweep_dir,
        tmp_path / "data",
        *TINY_RUN,
        "optimizer.lr=1e-3,3e-4",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(path for path in sweep_dir.iterdir() if path.is_dir())
    assert [job.name for job in jobs] == ["0", "1"]
    learning_rates = []
    for job in jobs:
        assert (job / "metrics.json").is_file() and (job / "checkpoints" / "best.ckpt").is_file()
        config = OmegaConf.load(job / ".hydra" / "config.yaml")
        learning_rates.append(config.optimizer.lr)
        hydra_config = OmegaConf.load(job / ".hydra" / "hydra.yaml").hydra
        assert hydra_config.runtime.output_dir == str(job)
        assert (job / "train.log").is_file()
    assert learning_rates == [1e-3, 3e-4]
    assert (sweep_dir / "multirun.yaml").is_file()


def test_optuna_config_composes_a_maximising_search():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["hparams_search=optuna"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper")
    assert sweeper.direction == "maximize" and sweeper.max_failure_rate == 1.0
    assert set(sweeper.params) == {
        "optimizer.lr",
        "optimizer.weight_decay",
        "loss",
        "data.sampler.power",
        "data.image_size",
    }
    assert cfg.data.oversample is True
    assert cfg.optimized_metric == "val/f1_macro"


@pytest.mark.slow
def test_optuna_study_in_sqlite_records_a_failed_trial_and_finishes(tmp_path: Path):
    """Three real trials; weight_decay=-1 is impossible (AdamW refuses it), so those trials fail
    and the sweep goes on. The seeded random sampler draws -1, 0, -1."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    sweep_dir = tmp_path / "sweep"
    result = run_module(
        "hpa.train",
        "-m",
        "hparams_search=optuna",
        "hydra/sweeper/sampler=random",
        "hydra.sweeper.n_trials=3",
        f"hydra.sweeper.storage={storage}",
        "hydra.sweeper.study_name=tiny",
        f"hydra.sweep.dir={sweep_dir}",
        f"paths.data_dir={tmp_path / 'data'}",
        *TINY_RUN,
        "optimizer.lr=1e-3",
        "loss=bce",
        "data.sampler.power=0.5",
        "optimizer.weight_decay=choice(0.0,-1.0)",
    )
    assert result.returncode == 0, result.stderr[-3000:]

    study = optuna.load_study(study_name="tiny", storage=storage)
    states = [trial.state for trial in study.trials]
    assert len(states) == 3
    assert optuna.trial.TrialState.COMPLETE in states
    assert optuna.trial.TrialState.FAIL in states
    for trial in study.trials:
        failed = trial.params["optimizer.weight_decay"] < 0
        assert trial.state == (
            optuna.trial.TrialState.FAIL if failed else optuna.trial.TrialState.COMPLETE
        )
    best = study.best_trial
    job_metrics = json.loads((sweep_dir / str(best.number) / "metrics.json").read_text())
    assert best.value == job_metrics["val/f1_macro"]
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert results["best_value"] == best.value


def test_slurm_launcher_follows_the_trainer(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HPA_SLURM_PARTITION", "gpu-long")
    overrides = [
        "hydra/launcher=slurm",
        "trainer=ddp",
        "trainer.devices=4",
        "trainer.num_nodes=2",
        "hydra.launcher.timeout_min=600",
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    # (submitit_folder and name need a running job: they follow hydra.sweep.dir and task_name)
    keys = ("partition", "gpus_per_node", "tasks_per_node", "nodes", "timeout_min")
    keys += ("cpus_per_task", "mem_gb", "account")
    launcher = {key: cfg.hydra.launcher[key] for key in keys}
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert launcher["partition"] == "gpu-long"
    assert launcher["gpus_per_node"] == 4 and launcher["tasks_per_node"] == 4
    assert launcher["nodes"] == 2
    assert launcher["timeout_min"] == 600
    assert launcher["cpus_per_task"] == 8 and launcher["mem_gb"] == 64
    assert launcher["account"] is None
