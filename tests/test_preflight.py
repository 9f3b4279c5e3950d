"""A misspelt name in the config stops a run in seconds, before any data is read, hashed or
cached (hpa.run.preflight)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cli import compose_entry, run_module

from hpa.core.errors import HPAInputError
from hpa.run.training import train


@pytest.fixture(scope="module")
def kaggle_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("preflight") / "data"
    result = run_module(
        "hpa.data.synthetic", str(root), "--n", "24", "--size", "32", "--no-progress"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return root


def _nothing_derived_from(root: Path) -> None:
    """No image cache, duplicate hashes or masks were written beside the data."""
    assert not (root / "cache").exists(), list((root / "cache").rglob("*"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model=timm", "model.name=resnet9000"], "resnet9000.*Close matches: .*resnet"),
        (["loss=focal", "+loss.gama=3"], "gama"),
        (["model.thresholds=rated"], "unknown threshold policy 'rated'"),
        (["+data.sampler.stratgy=minority"], "data.sampler.stratgy"),
        (["experiment=single_cell", "segment.name=watershedd"], "watershedd"),
        (["experiment=single_cell", "+cells.wieght=0.3"], "wieght"),
        (
            ["experiment=single_cell", "cells=broadcast", "+cells.output_stride=8"],
            "cells=broadcast uses no class maps",
        ),
        (
            ["experiment=single_cell", "cells=cam", "model=timm", "model.name=densenet121"],
            "densenet121 cannot make class maps at output stride 8",
        ),
    ],
)
def test_a_typo_fails_before_the_data_module_reads_anything(
    kaggle_root: Path, tmp_path: Path, overrides: list[str], message: str
) -> None:
    data = ["data=hpa", f"data.root={kaggle_root}", "data.image_size=32"]
    if overrides[0] == "experiment=single_cell":
        data = ["data=hpa2021", f"data.root={kaggle_root}"]
    cfg = compose_entry("train", [*data, *overrides], tmp_path / "run")
    started = time.monotonic()
    with pytest.raises(HPAInputError, match=message):
        train(cfg)
    assert time.monotonic() - started < 20
    _nothing_derived_from(kaggle_root)
    assert not (tmp_path / "run" / "split.csv").exists()


@pytest.mark.slow  # the default suite stays under 10 minutes; make test-slow runs it
def test_the_command_line_says_it_in_one_line_with_exit_code_2(kaggle_root, tmp_path) -> None:
    result = run_module(
        "hpa.train",
        "data=hpa",
        f"data.root={kaggle_root}",
        "model=timm",
        "model.name=resnet9000",
        f"hydra.run.dir={tmp_path}",
    )
    assert result.returncode == 2
    assert "Unknown backbone 'resnet9000'" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    _nothing_derived_from(kaggle_root)
