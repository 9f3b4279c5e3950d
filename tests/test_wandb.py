"""A real offline W&B run per job of a tiny multirun, read back from the run's own files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli import SMALL_SYNTHETIC_SET, run_module, train_multirun
from wandb_records import OfflineRun

from hpa.core.labels import HPA2018
from hpa.core.metric_names import TEST_F1_MACRO, TEST_F1_SAMPLES, VAL_F1_MACRO, per_class_f1_name


def media_table(run_dir: Path, key: str) -> dict:
    (path,) = (run_dir / "files" / "media" / "table").glob(f"{key}_*.table.json")
    return json.loads(path.read_text())


@pytest.mark.slow
def test_offline_multirun_logs_one_wandb_run_per_job(tmp_path: Path, monkeypatch):
    # no credentials and no WANDB_MODE: the logger must go offline by itself, without a prompt
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_PROJECT", "WANDB_ENTITY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    sweep_dir = tmp_path / "sweep"
    result = train_multirun(
        sweep_dir,
        tmp_path / "data",
        *SMALL_SYNTHETIC_SET,
        "logger=wandb",
        "wandb_group=tiny_sweep",
        "tags=[tiny,offline]",
        "model=cnn",
        "trainer.max_epochs=2",
        "+trainer.limit_train_batches=2",
        "data.num_workers=0",
        "data.normalize.num_images=32",
        "optimizer.lr=1e-3,3e-3",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "logging offline" in result.stdout + result.stderr

    run_ids = set()
    for job, lr in (("0", 1e-3), ("1", 3e-3)):
        job_dir = sweep_dir / job
        (run_dir,) = (job_dir / "wandb").glob("offline-run-*")
        assert f"wandb sync {run_dir}" in (job_dir / "train.log").read_text()
        run = OfflineRun(run_dir)
        run_ids.add(run.run.run_id)
        assert run.run.project == "hpa" and run.run.run_group == "tiny_sweep"
        assert run.run.job_type == "train" and list(run.run.tags) == ["tiny", "offline"]

        # the resolved config is the run config
        assert run.config["optimizer"]["lr"] == pytest.approx(lr)
        assert run.config["paths"]["output_dir"] == str(job_dir)

        # the summary holds the final (best checkpoint) metrics of metrics.json
        final = json.loads((job_dir / "metrics.json").read_text())
        for name in (
            VAL_F1_MACRO,
            TEST_F1_MACRO,
            TEST_F1_SAMPLES,
            per_class_f1_name("test", HPA2018, 0),
        ):
            assert run.summary[name] == pytest.approx(final[name], abs=1e-6)
        epochs = run.values(VAL_F1_MACRO)
        assert len(epochs) >= 3  # two epochs and the validation of the best checkpoint
        assert run.summary[VAL_F1_MACRO] == pytest.approx(max(epochs[:-1]), abs=1e-6)

        per_class = media_table(run_dir, "test/per_class_f1")
        assert per_class["columns"] == ["class_id", "class", "f1", "support"]
        assert [row[1] for row in per_class["data"]] == list(HPA2018.class_names)
        for class_id, _, f1, _ in per_class["data"]:
            assert f1 == pytest.approx(
                final[per_class_f1_name("test", HPA2018, class_id)], abs=1e-6
            )
        chart = run.config["_wandb/visualize/test/per_class_f1_chart"]["panel_config"]
        assert chart["panelDefId"] == "wandb/bar/v0"
        assert chart["fieldSettings"] == {"label": "class", "value": "f1"}
        assert run.summary["test/per_class_f1_chart_table/_type"] == "table-file"

        distribution = media_table(run_dir, "data/label_distribution")
        assert distribution["columns"] == ["class_id", "class", "train", "val", "test"]
        assert len(distribution["data"]) == HPA2018.num_classes + 1
        assert sum(distribution["data"][-1][2:]) == 120  # images per split

        (examples,) = run.values("val/examples/captions")
        assert len(examples) == 8
        assert all(
            caption.startswith("true: ") and "\npredicted: " in caption for caption in examples
        )
        images = run_dir / "files" / "media" / "images"
        assert len(list((images / "val").rglob("*.png"))) == 8
        # the run's report figures (hpa.report) go to the same run
        assert list((images / "report").rglob("*.png"))
    assert len(run_ids) == 2


@pytest.mark.slow
def test_a_resumed_run_continues_its_wandb_run(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    data_dir, run_dir = tmp_path / "data", tmp_path / "first"
    common = (
        f"paths.data_dir={data_dir}",
        *SMALL_SYNTHETIC_SET,
        "logger=wandb",
        "model=cnn",
        "test=false",
        "report=false",
        "data.num_workers=0",
        "data.normalize.num_images=32",
        "+trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=2",
    )
    first = run_module("hpa.train", f"hydra.run.dir={run_dir}", *common, "trainer.max_epochs=1")
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_module(
        "hpa.train",
        f"hydra.run.dir={tmp_path / 'second'}",
        *common,
        f"resume={run_dir}",
        "trainer.max_epochs=2",
    )
    assert second.returncode == 0, second.stderr[-3000:]

    # two offline run folders (one per process) of one W&B run: the second continues the first
    folders = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(folders) == 2
    before, after = (OfflineRun(folder) for folder in folders)
    assert after.run.run_id == before.run.run_id == folders[0].name.rsplit("-", 1)[-1]
    assert f"resuming W&B run {before.run.run_id}" in second.stdout + second.stderr

    # the resumed process logs the epochs after the first one's, at later trainer steps
    def validation_steps(run: OfflineRun) -> list[int]:
        return [row["trainer/global_step"] for row in run.history if VAL_F1_MACRO in row]

    assert before.values("epoch")[-1] < after.values("epoch")[-1]
    assert validation_steps(before) and validation_steps(after)
    assert min(validation_steps(after)) > max(validation_steps(before))


def test_runs_that_differ_only_in_their_seed_share_a_wandb_group(tmp_path: Path):
    """The default W&B group is the label `hpa.compare --group-seeds` groups runs by."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from hpa.evaluation.comparison import run_label
    from hpa.integrations.wandb_logging import seedless_run_label, wandb_logger
    from hpa.run.entry import CONFIG_DIR

    labels = []
    for seed in (0, 1):
        overrides = [f"seed={seed}", "optimizer.lr=0.01", "logger=wandb"]
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose("train", overrides=overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        labels.append(seedless_run_label("train"))
        compared = run_label({"task_name": "train"}, overrides, with_seed=False)
        assert labels[-1] == compared == "train optimizer.lr=0.01 logger=wandb"
    assert labels[0] == labels[1]
    assert cfg.wandb_group is None  # the logger derives the group
    logger = wandb_logger(offline=True, job_type="train", save_dir=str(tmp_path))
    assert logger._wandb_init["group"] == labels[0]  # what wandb.init will get
