"""Faults: a run killed mid-training resumes to the same result; a diverging loss stops cleanly."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from cli import REPO, SMALL_SYNTHETIC_SET, run_module

from hpa.core.labels import HPA2018
from hpa.data import synthetic
from hpa.data.datamodule import HPADataModule
from hpa.data.epoch_seeding import EpochShuffleSampler

# every random draw of an epoch follows (seed, epoch) (see epoch_seeding.py); the resume test
# runs with 0 and with 2 workers
THREE_EPOCHS = (
    *SMALL_SYNTHETIC_SET,
    "model=cnn",
    "data.num_workers=0",
    "trainer.max_epochs=3",
    "callbacks.early_stopping=null",
)


def train_command(run_dir: Path, data_dir: Path, *overrides: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "hpa.train",
        f"hydra.run.dir={run_dir}",
        f"paths.data_dir={data_dir}",
        *THREE_EPOCHS,
        *overrides,
    ]


def run_train(run_dir: Path, data_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    command = train_command(run_dir, data_dir, *overrides)
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_shuffle_order_depends_only_on_seed_and_epoch() -> None:
    first, second = EpochShuffleSampler(50, seed=3), EpochShuffleSampler(50, seed=3)
    orders = []
    for epoch in range(3):
        first.set_epoch(epoch)
        orders.append(list(first))
    second.set_epoch(2)
    assert list(second) == orders[2]  # straight to epoch 2, no earlier epochs drawn
    assert orders[0] != orders[1] and sorted(orders[0]) == list(range(50))


def test_train_loader_worker_seed_depends_only_on_seed_and_epoch(tmp_path: Path) -> None:
    root = synthetic.generate_dataset(tmp_path / "set", 24, 32, 0, progress=False)
    config = {"root": root, "image_size": 32, "batch_size": 4, "num_workers": 0}
    datamodule = HPADataModule.from_config(config, HPA2018)
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    base_seeds = []  # what each worker's seed derives from; torch draws it per iterator
    for global_seed in (1, 2):
        loader.sampler.set_epoch(1)
        torch.manual_seed(global_seed)  # whatever else drew from torch's generator meanwhile
        base_seeds.append(iter(loader)._base_seed)
    loader.sampler.set_epoch(2)
    assert base_seeds[0] == base_seeds[1] != iter(loader)._base_seed


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_killed_run_resumes_to_the_same_metrics(tmp_path: Path, workers: int) -> None:
    data_dir = tmp_path / "data"
    loader = f"data.num_workers={workers}"
    run_train(tmp_path / "uninterrupted", data_dir, loader)  # also generates the data set

    killed = tmp_path / "runs" / "killed"
    process = subprocess.Popen(
        train_command(killed, data_dir, loader),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # killed as soon as the second epoch starts (its start is logged after the first epoch's
    # checkpoint): a sleep would race the run, whose epochs take well under a second here
    log_file, last = killed / "train.log", killed / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline:
        if log_file.is_file() and "train epoch 1:" in log_file.read_text():
            break
        time.sleep(0.01)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "metrics.json").exists()
    epoch_at_kill = torch.load(last, map_location="cpu", weights_only=True)["epoch"]
    assert epoch_at_kill < 2

    # the same command with ckpt_path=last finds the killed run and continues it in place
    run_train(tmp_path / "runs" / "resumer", data_dir, loader, "ckpt_path=last")
    resumed = json.loads((killed / "metrics.json").read_text())
    expected = json.loads((tmp_path / "uninterrupted" / "metrics.json").read_text())
    assert resumed == expected

    # the CSV log continued without the killed epoch's rows: the same log as the uninterrupted one
    log = pd.read_csv(killed / "csv" / "metrics.csv")
    reference = pd.read_csv(tmp_path / "uninterrupted" / "csv" / "metrics.csv")
    pd.testing.assert_frame_equal(log, reference)


@pytest.mark.slow
def test_resume_a_run_dir_continues_its_checkpoint_and_log(tmp_path: Path) -> None:
    data_dir, first = tmp_path / "data", tmp_path / "first"
    short = ("test=false", "+trainer.limit_train_batches=3", "+trainer.limit_val_batches=2")
    run_train(first, data_dir, "trainer.max_epochs=1", *short)
    before = torch.load(first / "checkpoints" / "last.ckpt", weights_only=True)
    run_train(tmp_path / "second", data_dir, f"resume={first}", "trainer.max_epochs=2", *short)
    after = torch.load(first / "checkpoints" / "last.ckpt", weights_only=True)
    # the second epoch was trained from the first run's checkpoint, in its directory
    assert after["global_step"] == 2 * before["global_step"] == 6
    log = pd.read_csv(first / "csv" / "metrics.csv")
    # one validation row per trained epoch, then the final validation of the best checkpoint
    assert log.dropna(subset=["val/f1_macro"])["epoch"].tolist() == [0, 1, 2]
    assert not (tmp_path / "second" / "checkpoints").exists()


@pytest.mark.slow
def test_ckpt_path_last_without_a_matching_run_is_refused(tmp_path: Path) -> None:
    result = run_module(
        "hpa.train",
        f"hydra.run.dir={tmp_path / 'runs' / 'new'}",
        f"paths.data_dir={tmp_path / 'data'}",
        "ckpt_path=last",
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert "ckpt_path=last: no run under" in output and "Traceback" not in output


@pytest.mark.slow
def test_non_finite_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(
    tmp_path: Path,
) -> None:
    # a real divergence: the learning rate jumps by 1e30 after the first epoch
    result = subprocess.run(
        train_command(
            tmp_path / "run",
            tmp_path / "data",
            "scheduler=cosine",  # the default is none: a scheduler node to turn into StepLR
            "~scheduler.T_max",
            "scheduler._target_=torch.optim.lr_scheduler.StepLR",
            "+scheduler.step_size=1",
            "+scheduler.gamma=1e30",
        ),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 3, output[-3000:]
    assert "training stopped: training loss is nan" in output or "loss is inf" in output
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert f"the last good checkpoint is {last}" in output
    assert "Traceback" not in output
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    assert checkpoint["epoch"] == 0
    assert all(torch.isfinite(value).all() for value in checkpoint["state_dict"].values())
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_synthetic_set_killed_mid_way_is_rebuilt_never_read(tmp_path: Path) -> None:
    root = tmp_path / "set"
    command = [sys.executable, "-m", "hpa.data.synthetic", str(root), "--n", "3000", "--size", "64"]
    process = subprocess.Popen(
        [*command, "--no-progress"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        work_dirs = list(tmp_path.glob("set.tmp-*/train"))
        if work_dirs and sum(1 for _ in work_dirs[0].iterdir()) > 200:
            break
        time.sleep(0.05)
    assert process.poll() is None, "generation ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not synthetic.is_complete(root) and not (root / "train.csv").exists()

    synthetic.ensure_dataset(root, 100, 64, seed=0, progress=False)
    assert synthetic.is_complete(root)
    assert len(list((root / "train").iterdir())) == 400


def test_an_epochs_batches_do_not_depend_on_the_number_of_workers(tmp_path: Path) -> None:
    """Each sample's augmentation is seeded from (seed, epoch, position): the same batches
    whichever process reads them, the ground of an exact resume with workers."""
    root = synthetic.generate_dataset(tmp_path / "set", 24, 32, 0, progress=False)
    augment = {"d4": {"_target_": "hpa.data.transforms.D4", "p": 1.0}}
    batches = {}
    for workers in (0, 2):
        config = {"root": root, "image_size": 32, "batch_size": 4, "num_workers": workers}
        datamodule = HPADataModule.from_config(config, HPA2018, augment=augment)
        datamodule.setup("fit")
        loader = datamodule.train_dataloader()
        loader.sampler.set_epoch(1)
        batches[workers] = [
            batch["image"].clone() for batch, _ in zip(loader, range(3), strict=False)
        ]
    for first, second in zip(batches[0], batches[2], strict=True):
        torch.testing.assert_close(first, second, rtol=0, atol=0)
    loader.sampler.set_epoch(2)
    assert not torch.equal(next(iter(loader))["image"], batches[2][0])
