"""DDP: evaluation sees every sample exactly once, oversampling ranks share one epoch draw, a
`trainer=ddp_sim` run (2 CPU processes, gloo) tests like a single process, and a multirun of DDP
jobs gets one directory per job."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from cli import SMALL_SYNTHETIC_SET, run_module, train_multirun
from torch.utils.data import DistributedSampler

from hpa.core.distributed import evaluation_sampler
from hpa.core.labels import HPA2018
from hpa.data.sampler import DistributedOversamplingSampler, OversamplingSampler

# two DDP processes on the tiny set: oversampled training, full val and test splits
DDP_SIM_RUN = (
    *SMALL_SYNTHETIC_SET,
    "trainer=ddp_sim",
    "model=cnn",
    "data.oversample=true",
    # a loss that is a mean over images: the default's Lovasz term is not, so its test/loss
    # depends on how the images are batched, which differs between two ranks and one process
    "loss=bce_balanced",
    "trainer.max_epochs=2",
    "+trainer.limit_train_batches=2",
    "data.num_workers=0",
    "data.normalize.num_images=32",
    "callbacks.model_summary=null",
)


@pytest.mark.parametrize("size", [7, 8, 2])
def test_evaluation_samplers_of_two_ranks_cover_each_index_once(size: int):
    dataset = list(range(size))
    samplers = [evaluation_sampler(dataset, num_replicas=2, rank=rank) for rank in (0, 1)]
    shares = [list(sampler) for sampler in samplers]
    assert sorted(shares[0] + shares[1]) == dataset
    assert [len(sampler) for sampler in samplers] == [len(share) for share in shares]


def test_oversampling_ranks_draw_disjoint_shares_of_one_epoch_draw():
    weights = np.linspace(1.0, 10.0, 101)
    ranks = [DistributedOversamplingSampler(weights, 2, rank, seed=3) for rank in (0, 1)]
    assert all(isinstance(sampler, DistributedSampler) for sampler in ranks)
    for epoch in (0, 5):
        for sampler in ranks:
            sampler.set_epoch(epoch)
        shares = [list(sampler) for sampler in ranks]
        assert len(shares[0]) == len(shares[1]) == len(ranks[0]) == 51  # ceil(101 / 2)
        # the one draw of the epoch (rounded up to 102), position p going to rank p % 2
        whole = OversamplingSampler(weights, num_samples=102, seed=3)
        whole.set_epoch(epoch)
        drawn = list(whole)
        assert shares[0] == drawn[0::2] and shares[1] == drawn[1::2]
    ranks[0].set_epoch(0)
    epoch_0 = list(ranks[0])
    ranks[0].set_epoch(5)
    assert list(ranks[0]) != epoch_0  # set_epoch is honoured


def test_repeat_draws_are_shared_by_the_ranks_without_overlap():
    weights = np.array([1.0, 2.0, 1.0, 3.5, 1.0])  # an epoch of 1 + 2 + 1 + 3 + 1 + 1 = 9 draws
    ranks = [
        DistributedOversamplingSampler(weights, 2, rank, seed=4, draws="repeat") for rank in (0, 1)
    ]
    whole = OversamplingSampler(weights, seed=4, num_replicas=1, draws="repeat")
    assert len(whole) == 9 and [len(sampler) for sampler in ranks] == [5, 5]
    for epoch in (0, 2):
        for sampler in (*ranks, whole):
            sampler.set_epoch(epoch)
        shares = [list(sampler) for sampler in ranks]
        drawn = list(whole)
        padded = drawn + drawn[:1]  # rounded up to 10 with the epoch's first draw
        assert shares[0] == padded[0::2] and shares[1] == padded[1::2]
        assert set(shares[0] + shares[1]) == set(range(5))  # every image in the epoch


def check_ddp_test_equals_single_process_test(tmp_path: Path, *overrides: str) -> None:
    """Train with DDP, then test the best checkpoint in one process with `hpa.eval`: the same
    test metrics and the same test predictions, every test image once."""
    run_dir, eval_dir = tmp_path / "run", tmp_path / "eval"
    result = run_module(
        "hpa.train", f"hydra.run.dir={run_dir}", f"paths.data_dir={tmp_path / 'data'}", *overrides
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run_dir / "train_ddp_process_1.log").is_file()  # the second process ran
    result = run_module(
        "hpa.eval",
        f"ckpt_path={run_dir / 'checkpoints' / 'best.ckpt'}",
        f"hydra.run.dir={eval_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]

    distributed = json.loads((run_dir / "metrics.json").read_text())
    single = json.loads((eval_dir / "metrics.json").read_text())
    test_metrics = [name for name in single if name.startswith("test/")]
    assert len(test_metrics) > 28
    for name in test_metrics:
        assert distributed[name] == pytest.approx(single[name], abs=1e-6), name

    # test predictions gathered from both ranks: every test image once, as one process sees it
    split = pd.read_csv(run_dir / "split.csv")
    test_ids = sorted(split.loc[split["split"] == "test", "Id"])
    ddp_predictions = pd.read_csv(run_dir / "test_predictions.csv", keep_default_na=False)
    single_predictions = pd.read_csv(eval_dir / "test_predictions.csv", keep_default_na=False)
    assert sorted(ddp_predictions["Id"]) == test_ids and ddp_predictions["Id"].is_unique
    pd.testing.assert_frame_equal(
        ddp_predictions.set_index("Id").sort_index(),
        single_predictions.set_index("Id").sort_index(),
        atol=1e-5,
    )
    probabilities = torch.tensor(ddp_predictions[list(HPA2018.class_names)].to_numpy())
    assert probabilities.shape == (len(test_ids), len(HPA2018.class_names))


@pytest.mark.slow  # about 55 s: two DDP processes train, then a single-process eval
def test_ddp_sim_test_metrics_equal_a_single_process_test(tmp_path: Path):
    check_ddp_test_equals_single_process_test(tmp_path, *DDP_SIM_RUN)


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")
def test_ddp_on_two_gpus_tests_like_a_single_process(tmp_path: Path):
    gpu_run = [override for override in DDP_SIM_RUN if not override.startswith("trainer=")]
    check_ddp_test_equals_single_process_test(
        tmp_path, *gpu_run, "trainer=ddp", "trainer.devices=2", "trainer.precision=32-true"
    )


@pytest.mark.slow  # about 85 s on 2 busy cores: four processes, two jobs
def test_multirun_of_ddp_jobs_has_one_directory_per_job(tmp_path: Path):
    sweep_dir = tmp_path / "sweep"
    result = train_multirun(
        sweep_dir,
        tmp_path / "data",
        f"paths.root_dir={tmp_path}",
        *DDP_SIM_RUN,
        "trainer.max_epochs=1",
        "model.threshold=0.4,0.6",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(path.name for path in sweep_dir.iterdir() if path.is_dir()) == ["0", "1"]
    for job, threshold in (("0", 0.4), ("1", 0.6)):
        job_dir = sweep_dir / job
        assert (job_dir / "metrics.json").is_file()
        assert (job_dir / "train_ddp_process_1.log").is_file()  # rank 1 worked in the job's folder
        checkpoint = torch.load(job_dir / "checkpoints" / "best.ckpt", weights_only=True)
        assert checkpoint["hyper_parameters"]["threshold"] == threshold
    # no process wrote a run directory of its own elsewhere, and no job ran the sweep again
    assert not (tmp_path / "logs").exists()
    assert (result.stdout + result.stderr).count("Launching 2 jobs locally") == 1
