"""The package as a user installs it: a built wheel in a fresh environment, run from a directory
with no conf/ and no checkout, through its console script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest
from cli import REPO


def build_wheel(out_dir: Path) -> Path:
    """The wheel of a copy of the checkout (the build writes into its source tree)."""
    source = out_dir.parent / "source"
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, source / name)
    for folder in ("hpa", "conf"):
        shutil.copytree(
            REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out_dir), str(source)],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    (wheel,) = out_dir.glob("hpa-*.whl")
    return wheel


def fresh_environment(path: Path) -> Path:
    """A new virtual environment whose own site-packages come first; the test environment's
    site-packages follow (added by a .pth file) for the dependencies, without their editable hpa,
    which only a site directory's own .pth files would activate."""
    venv.EnvBuilder(with_pip=False).create(path)
    site_packages = next(path.glob("lib/python*/site-packages"))
    (site_packages / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return path / "bin" / "python"


@pytest.mark.slow
def test_a_built_wheel_trains_from_a_directory_without_conf(tmp_path: Path):
    wheel = build_wheel(tmp_path / "dist")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert "hpa/conf/train.yaml" in names and "hpa/conf/model/resnet18.yaml" in names

    python = fresh_environment(tmp_path / "env")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
         str(wheel)],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    elsewhere = tmp_path / "elsewhere"  # no conf/, no checkout
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HPA_ROOT")}
    result = subprocess.run(
        [str(tmp_path / "env" / "bin" / "hpa-train"), "debug=fast", "hydra.run.dir=run"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    where = subprocess.run(
        [str(python), "-c", "import hpa; print(hpa.__file__)"],
        cwd=elsewhere, env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert str(tmp_path / "env") in where  # the installed package ran, not the checkout
    metrics = json.loads((elsewhere / "run" / "metrics.json").read_text())
    assert 0.0 <= metrics["test/f1_macro"] <= 1.0
    assert (elsewhere / "data").is_dir()  # generated under the directory it ran from
