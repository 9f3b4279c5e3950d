"""Atomic artifact writes: all or nothing, and files as readable as any other new file."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from hpa.core.io import write_atomic, write_json


def test_an_artifact_gets_the_mode_of_an_ordinary_new_file(tmp_path: Path):
    ordinary = tmp_path / "ordinary.txt"
    ordinary.write_text("x")
    write_json(tmp_path / "metrics.json", {"a": 1.0})
    mode = stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode)
    assert mode == stat.S_IMODE(ordinary.stat().st_mode)


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path):
    target = tmp_path / "metrics.json"
    write_json(target, {"a": 1.0})

    def fail_halfway(path: Path) -> None:
        path.write_text('{"a": 2')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, fail_halfway)
    assert json.loads(target.read_text()) == {"a": 1.0}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
