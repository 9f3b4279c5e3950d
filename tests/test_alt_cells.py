"""benchmarks.alt_cells: the second synthetic cell set, read back through the project's readers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmarks.alt_cells import MANIFEST_NAME, NEGATIVE, ensure_alt_cell_set, main
from hpa.core.errors import HPAInputError
from hpa.core.labels import CHANNELS, HPA2021
from hpa.data.cells import build_segmenter
from hpa.data.cells.truth import CellTruth
from hpa.data.validate import find_problems
from hpa.evaluation.cell_map import segmentation_match_rate

SETTINGS = {"num_train": 12, "num_test": 3, "sizes": (128, 160), "seed": 3}


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def class_set(label: str) -> set[int]:
    return {int(i) for i in np.flatnonzero(HPA2021.parse(label))}


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def alt_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("alt") / "cells"
    assert ensure_alt_cell_set(root, **SETTINGS) == root
    return root


@pytest.fixture(scope="module")
def image_ids(alt_set: Path) -> dict[str, str]:
    """{ID: split} of every image."""
    ids = {row["ID"]: "train" for row in read_rows(alt_set / "train.csv")}
    ids |= {row["ID"]: "test" for row in read_rows(alt_set / "sample_submission.csv")}
    return ids


def test_layout_and_manifest(alt_set: Path, image_ids: dict[str, str]) -> None:
    assert sorted(p.name for p in alt_set.iterdir()) == sorted(
        ["train.csv", "train", "test", "sample_submission.csv", "cell_truth", MANIFEST_NAME]
    )
    assert sorted(p.name for p in alt_set.parent.iterdir()) == ["cells"]  # no temp folder left
    manifest = json.loads((alt_set / MANIFEST_NAME).read_text())
    assert manifest["num_train"] == 12 and manifest["sizes"] == [128, 160]
    assert list(image_ids.values()).count("test") == 3
    for split in ("train", "test"):  # the project's reader decodes every channel file
        ids = [image_id for image_id, where in image_ids.items() if where == split]
        assert find_problems(alt_set / split, ids, mode="full") == []
    for row in read_rows(alt_set / "sample_submission.csv"):
        assert row["ImageWidth"] == row["ImageHeight"] and row["PredictionString"] == ""
        green = cv2.imread(str(alt_set / "test" / f"{row['ID']}_green.png"), cv2.IMREAD_UNCHANGED)
        assert green.shape == (int(row["ImageHeight"]),) * 2


def test_cell_truth_reads_back_and_matches_the_images(
    alt_set: Path, image_ids: dict[str, str]
) -> None:
    truth = CellTruth(alt_set / "cell_truth", HPA2021)
    labels = {row["ID"]: class_set(row["Label"]) for row in read_rows(alt_set / "train.csv")}
    heterogeneous, cells_per_image = 0, []
    for image_id, split in image_ids.items():
        mask, cells = truth.load(image_id)
        cells_per_image.append(len(cells))
        planes = [
            cv2.imread(str(alt_set / split / f"{image_id}_{c}.png"), cv2.IMREAD_UNCHANGED)
            for c in CHANNELS
        ]
        assert all(p.dtype == np.uint8 and p.shape == mask.shape for p in planes)
        assert mask.shape[0] == mask.shape[1] and mask.shape[0] in SETTINGS["sizes"]
        assert sorted(cells) == list(range(1, len(cells) + 1))
        for classes in cells.values():
            assert classes and (classes == (NEGATIVE,) or NEGATIVE not in classes)
        union = {c for classes in cells.values() for c in classes}
        if split == "train":
            assert labels[image_id] == union
        shown = union - {NEGATIVE}
        heterogeneous += any(
            sum(c in classes for classes in cells.values()) < len(cells) for c in shown
        )
    assert heterogeneous >= 2
    assert 6 <= np.mean(cells_per_image) <= 20


def test_same_settings_give_identical_bytes_and_are_reused(alt_set: Path, tmp_path: Path) -> None:
    again = ensure_alt_cell_set(tmp_path / "again", **SETTINGS)
    assert tree_bytes(again) == tree_bytes(alt_set)
    before = (alt_set / MANIFEST_NAME).stat().st_mtime_ns
    assert ensure_alt_cell_set(alt_set, **SETTINGS) == alt_set  # reused, not rewritten
    assert (alt_set / MANIFEST_NAME).stat().st_mtime_ns == before


def test_other_settings_or_foreign_folders_are_refused(alt_set: Path, tmp_path: Path) -> None:
    with pytest.raises(HPAInputError, match="other settings"):
        ensure_alt_cell_set(alt_set, **{**SETTINGS, "seed": 4})
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(HPAInputError, match="not an alternative cell set"):
        ensure_alt_cell_set(foreign, num_train=2, sizes=(128,))
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_command_line_writes_a_set(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    main([str(tmp_path / "cli"), "--num-train", "2", "--sizes", "128", "--seed", "1"])
    assert capsys.readouterr().out.strip() == str(tmp_path / "cli")
    assert len(read_rows(tmp_path / "cli" / "train.csv")) == 2
    assert not (tmp_path / "cli" / "test").exists()


def test_the_default_watershed_finds_the_cells(alt_set: Path, image_ids: dict[str, str]) -> None:
    segmenter = build_segmenter({"name": "watershed"})
    truth = CellTruth(alt_set / "cell_truth", HPA2021)
    matched = total = 0
    for image_id, split in image_ids.items():
        predicted = segmenter.segment_sample(alt_set / split, image_id)
        found, count = segmentation_match_rate(truth.load(image_id)[0], predicted)
        matched, total = matched + found, total + count
    assert matched / total >= 0.7, f"{matched}/{total} truth cells matched at IoU 0.6"
