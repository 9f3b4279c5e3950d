"""Pretrained weights are found (local file, cache, hub) before any work, or the run is refused at
once with a message saying what to do. This machine has no network: the hub is unreachable."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
import timm
import torch
from cli import run_module
from huggingface_hub import constants

from hpa.core.errors import HPAInputError
from hpa.models.pretrained import cached_weights, ensure_pretrained_weights, hub_reachable


@pytest.fixture()
def empty_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache / "hub"))
    return cache


def test_a_pretrained_model_without_reachable_weights_is_refused_at_once(tmp_path: Path):
    if hub_reachable():
        pytest.skip("the hub is reachable from here")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path / "torch")}
    started = time.monotonic()
    result = run_module(
        "hpa.train",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"paths.data_dir={tmp_path / 'data'}",
        "debug=fast",
        "model=resnet50",
        "model.pretrained=true",
        env=env,
    )
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    for advice in ("hpa.weights fetch", "model.pretrained_path", "HF_HUB_OFFLINE", "resnet50"):
        assert advice in output
    assert "Traceback" not in output
    assert not (tmp_path / "data").exists()  # refused before any data was generated
    assert elapsed < 60  # no minutes of retries (the process start is most of it)


def test_a_local_weights_file_or_a_cached_copy_is_accepted(empty_hub_cache: Path, tmp_path: Path):
    weights = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), weights)
    ensure_pretrained_weights("resnet18", pretrained=True, pretrained_path=str(weights))
    with pytest.raises(HPAInputError, match="no such file"):
        ensure_pretrained_weights("resnet18", True, pretrained_path=str(tmp_path / "gone.pth"))

    assert cached_weights("resnet18") is None
    # the layout of the hub's cache, as a download leaves it
    hub_id = timm.models.get_pretrained_cfg("resnet18").hf_hub_id
    snapshot = empty_hub_cache / "hub" / f"models--{hub_id.replace('/', '--')}"
    (snapshot / "refs").mkdir(parents=True)
    (snapshot / "refs" / "main").write_text("0" * 40)
    (snapshot / "snapshots" / ("0" * 40)).mkdir(parents=True)
    shutil.copy(weights, snapshot / "snapshots" / ("0" * 40) / "model.safetensors")
    assert cached_weights("resnet18") is not None
    ensure_pretrained_weights("resnet18", pretrained=True)  # cached: no network needed


def test_training_from_scratch_needs_no_weights():
    ensure_pretrained_weights("resnet50", pretrained=False)
