"""The GPU paths: bf16 mixed precision, channels_last batches and pinned memory on a real CUDA
device. Skipped without one (run on a lent GPU machine; README, "One GPU, several GPUs")."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli import SMALL_SYNTHETIC_SET, run_module

from benchmarks.common import train_config
from hpa.core.metric_names import TEST_F1_MACRO, VAL_F1_MACRO
from hpa.run import builders

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_train_runs_on_the_gpu_in_bf16_with_channels_last_and_workers(tmp_path: Path):
    result = run_module(
        "hpa.train",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"paths.data_dir={tmp_path / 'data'}",
        *SMALL_SYNTHETIC_SET,
        "trainer=gpu",  # bf16-mixed
        "model=resnet18",
        "model.pretrained=false",
        "model.channels_last=true",
        "data.num_workers=2",
        "trainer.max_epochs=2",
        "report=false",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run_dir = tmp_path / "run"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert np.isfinite(metrics[TEST_F1_MACRO]) and np.isfinite(metrics[VAL_F1_MACRO])
    config = (run_dir / ".hydra" / "config.yaml").read_text()
    assert "precision: bf16-mixed" in config and "accelerator: gpu" in config
    checkpoint = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    assert all(not value.is_cuda for value in checkpoint["state_dict"].values())


def test_loader_batches_reach_the_gpu_channels_last_and_bf16_matches_fp32(tmp_path: Path):
    cfg = train_config(
        f"paths.data_dir={tmp_path / 'data'}",
        *SMALL_SYNTHETIC_SET,
        "model=resnet18",
        "model.pretrained=false",
        "model.channels_last=true",
        "data.num_workers=2",
    )
    datamodule = builders.build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    assert loader.pin_memory  # with CUDA
    batch = next(iter(loader))
    assert batch["image"].is_pinned()
    images = batch["image"].to("cuda", non_blocking=True)
    assert images.is_contiguous(memory_format=torch.channels_last) and images.dtype == torch.uint8

    torch.manual_seed(0)
    module = builders.build_module(cfg, datamodule).to("cuda").eval()
    with torch.no_grad():
        reference = module(images)  # fp32
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = module(images)
            loss = module.criterion(logits, batch["target"].to("cuda"))
    assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
    error = (logits.float() - reference).norm() / reference.norm()
    assert error < 2e-2, f"bf16 logits differ from fp32 by {error:.3g} (relative)"
