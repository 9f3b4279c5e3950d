"""Near-duplicate samples: degraded copies of real HPA channels are found, distinct fields of view
are kept apart; hashes are cached per root; matching equals a brute-force reference."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from cli import run_module
from omegaconf import OmegaConf
from planted import append_rows, write_channel, write_degraded_copy

from hpa.core.errors import HPAInputError
from hpa.core.labels import CHANNELS
from hpa.core.run_dir import RunDir
from hpa.data.duplicates import (
    DEFAULT_THRESHOLD,
    MAX_DISTANCE,
    PAIR_COLUMNS,
    RowPairs,
    check_threshold,
    duplicate_groups,
    hash_file,
    near_duplicate_pairs,
    root_hashes,
    split_pair_counts,
)
from hpa.data.reader import read_ids_csv

REPO = Path(__file__).resolve().parents[1]
NUM_REAL_SAMPLES = 12  # 12 real files per colour, each from another sample

# (source sample, copy id, where, degradation): rescaled, re-compressed, brightened copies
PLANTED = (
    ("s00", "s00-half-q50", "kaggle", {"scale": 0.5, "gain": 1.0, "offset": 0, "jpeg_quality": 50}),
    ("s01", "v18-s01-x4", "hpav18", {"scale": 4.0, "gain": 1.0, "offset": 0, "jpeg_quality": 90}),
    ("s02", "v18-s02-bright", "hpav18", {"scale": 0.6, "gain": 1.4, "offset": 10}),
    (
        "s03",
        "v18-s03-gain",
        "hpav18",
        {"scale": 1.0, "gain": 1.5, "offset": 0, "jpeg_quality": None},
    ),
    ("s04", "v18-s04-q20", "hpav18", {"scale": 1.0, "gain": 1.0, "offset": 0, "jpeg_quality": 20}),
    (
        "s05",
        "v18-s05-mixed",
        "hpav18",
        {"scale": 0.75, "gain": 1.2, "offset": 20, "jpeg_quality": 75},
    ),
    (
        "s07-q1",
        "v18-s07-q1",
        "hpav18",
        {"scale": 1.5, "gain": 1.1, "offset": 5, "jpeg_quality": 70},
    ),
)


def _real_files(real_channels_dir: Path) -> dict[str, list[Path]]:
    files = {color: sorted(real_channels_dir.glob(f"*_{color}.png")) for color in CHANNELS}
    assert all(len(paths) == NUM_REAL_SAMPLES for paths in files.values())
    return files


@pytest.fixture(scope="module")
def real_roots(real_channels_dir: Path, tmp_path_factory) -> dict[str, Path]:
    """Two Kaggle-layout roots made of the 48 real channel files.

    ``kaggle``: 12 samples (sample k: the k-th file of each colour), the four quadrants of each
    as samples of their own (neighbouring fields of view of one slide: the closest distinct
    images there are) and one planted duplicate. ``hpav18``: the other planted duplicates.
    """
    base = tmp_path_factory.mktemp("real")
    roots = {name: base / name for name in ("kaggle", "hpav18")}
    files = _real_files(real_channels_dir)
    rows: dict[str, dict[str, str]] = {name: {} for name in roots}
    for k in range(NUM_REAL_SAMPLES):
        for color in CHANNELS:
            channel = cv2.imread(str(files[color][k]), cv2.IMREAD_GRAYSCALE)
            write_channel(roots["kaggle"] / "train" / f"s{k:02d}_{color}", channel)
            half = channel.shape[0] // 2
            quadrants = (channel[:half, :half], channel[:half, half:])
            quadrants += (channel[half:, :half], channel[half:, half:])
            for q, quadrant in enumerate(quadrants):
                write_channel(roots["kaggle"] / "train" / f"s{k:02d}-q{q}_{color}", quadrant)
        rows["kaggle"][f"s{k:02d}"] = "0"
        rows["kaggle"].update({f"s{k:02d}-q{q}": "0" for q in range(4)})
    for source, copy, where, degradation in PLANTED:
        write_degraded_copy(
            roots["kaggle"] / "train", source, roots[where] / "train", copy, **degradation
        )
        rows[where][copy] = "0"
    for name, root in roots.items():
        append_rows(root / "train.csv", rows[name])
    return roots


def _planted_pairs(roots: dict[str, Path]) -> set[tuple[str, str, str, str]]:
    return {
        (str(roots["kaggle"]), source, str(roots[where]), copy)
        for source, copy, where, _ in PLANTED
    }


def _unordered(pairs: set[tuple[str, str, str, str]]) -> set[frozenset]:
    return {frozenset({(a, ida), (b, idb)}) for a, ida, b, idb in pairs}


def test_every_planted_duplicate_is_found_and_no_distinct_pair_is_joined(
    real_roots: dict[str, Path], tmp_path: Path
):
    out = tmp_path / "pairs.csv"
    roots = [str(real_roots["kaggle"]), str(real_roots["hpav18"])]
    result = run_module("hpa.data.duplicates", *roots, "--out", str(out), "--workers", "2")
    assert result.returncode == 0, result.stderr[-3000:]

    table = pd.read_csv(out, dtype={"Id_a": str, "Id_b": str})
    assert list(table.columns) == list(PAIR_COLUMNS)
    found = set(zip(table.root_a, table.Id_a, table.root_b, table.Id_b, strict=True))
    assert _unordered(found) == _unordered(_planted_pairs(real_roots))
    assert (table.distance <= DEFAULT_THRESHOLD).all()
    # the hashes of each root are cached beside it
    for root in real_roots.values():
        assert hash_file(root / "train").is_file()


def _distances(hashes: np.ndarray, other: np.ndarray | None = None) -> np.ndarray:
    """Every summed distance, one pair at a time: rows of ``hashes`` x rows of ``other``."""
    other = hashes if other is None else other
    return np.bitwise_count(hashes[:, None, :] ^ other[None, :, :]).sum(axis=2, dtype=np.int64)


def test_duplicates_and_distinct_images_are_far_apart_on_either_side_of_the_threshold(
    real_roots: dict[str, Path],
):
    kaggle_ids = read_ids_csv(real_roots["kaggle"] / "train.csv")
    kaggle = root_hashes(real_roots["kaggle"] / "train", kaggle_ids)
    hpav18_ids = read_ids_csv(real_roots["hpav18"] / "train.csv")
    hpav18 = root_hashes(real_roots["hpav18"] / "train", hpav18_ids)

    ids = np.concatenate([kaggle_ids, hpav18_ids])
    distances = _distances(np.concatenate([kaggle, hpav18]))
    planted = {frozenset({source, copy}) for source, copy, _, _ in PLANTED}
    first, second = np.triu_indices(len(ids), k=1)
    is_planted = np.array(
        [frozenset({ids[a], ids[b]}) in planted for a, b in zip(first, second, strict=True)]
    )
    duplicates = distances[first[is_planted], second[is_planted]]
    distinct = distances[first[~is_planted], second[~is_planted]]
    assert len(duplicates) == len(PLANTED)
    # a margin on both sides, not just a threshold that happens to fall in between
    assert duplicates.max() <= 0.75 * DEFAULT_THRESHOLD
    assert distinct.min() >= 1.5 * DEFAULT_THRESHOLD


def test_hashes_are_cached_and_computed_again_when_a_file_changes(
    real_roots: dict[str, Path], tmp_path: Path, caplog
):
    root = tmp_path / "root"
    source = real_roots["kaggle"]
    rows = {f"s{k:02d}": "0" for k in range(3)}
    for sample_id in rows:
        for color in CHANNELS:
            channel = cv2.imread(str(source / "train" / f"{sample_id}_{color}.png"), 0)
            write_channel(root / "train" / f"{sample_id}_{color}", channel)
    append_rows(root / "train.csv", rows)
    ids = read_ids_csv(root / "train.csv")

    with caplog.at_level(logging.INFO, logger="hpa.data.duplicates"):
        first = root_hashes(root / "train", ids)
        assert hash_file(root / "train") == root / "cache" / "train-phash.npz"
        caplog.clear()
        again = root_hashes(root / "train", ids)
        assert "using the hashes" in caplog.text
        np.testing.assert_array_equal(first, again)

        # another image under the same name, with a newer time: hashed again
        changed = root / "train" / "s01_green.png"
        other = cv2.imread(str(source / "train" / "s09_green.png"), 0)
        write_channel(changed, other)
        os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
        caplog.clear()
        changed_hashes = root_hashes(root / "train", ids)
        assert "using the hashes" not in caplog.text
    green = slice(CHANNELS.index("green") * 4, CHANNELS.index("green") * 4 + 4)
    assert (changed_hashes[1, green] != first[1, green]).any()
    np.testing.assert_array_equal(np.delete(changed_hashes, 1, axis=0), np.delete(first, 1, axis=0))


def test_the_hashes_of_a_root_without_a_writable_cache_folder_go_to_cache_dir(
    real_roots: dict[str, Path], tmp_path: Path
):
    root = real_roots["hpav18"]
    ids = read_ids_csv(root / "train.csv")
    expected = root_hashes(root / "train", ids)
    blocked = tmp_path / "blocked"
    (blocked / "train").mkdir(parents=True)
    for path in (root / "train").iterdir():
        (blocked / "train" / path.name).symlink_to(path)
    (blocked / "cache").write_text("in the way")  # as root, chmod would not stop writes
    hashes = root_hashes(blocked / "train", ids, cache_dir=tmp_path / "caches")
    np.testing.assert_array_equal(hashes, expected)
    assert hash_file(blocked / "train", tmp_path / "caches").parent.parent == tmp_path / "caches"
    assert hash_file(blocked / "train", tmp_path / "caches").is_file()


def _brute_force(hashes: np.ndarray, other: np.ndarray | None, threshold: int) -> set:
    within = other is None
    distances = _distances(hashes, other)
    first, second = np.nonzero(distances <= threshold)
    keep = second > first if within else np.ones(len(first), dtype=bool)
    return set(zip(first[keep], second[keep], distances[first[keep], second[keep]], strict=True))


def _flip_bits(row: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    bits = np.unpackbits(row.view(np.uint8))
    bits[rng.choice(len(bits), size=count, replace=False)] ^= 1
    return np.packbits(bits).view(np.uint64)


def test_matching_equals_a_brute_force_reference_at_the_threshold():
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**64 - 1, size=(700, 16), dtype=np.uint64, endpoint=True)
    other = rng.integers(0, 2**64 - 1, size=(300, 16), dtype=np.uint64, endpoint=True)
    # planted: distance threshold - 1, threshold (found) and threshold + 1 (not found)
    for target, (source, flips) in enumerate([(5, 159), (6, 160), (7, 161), (300, 3)]):
        hashes[400 + target] = _flip_bits(hashes[source], flips, rng)
        other[target] = _flip_bits(hashes[source + 1], flips, rng)

    pairs = near_duplicate_pairs(hashes, threshold=160)
    assert set(zip(*pairs, strict=True)) == _brute_force(hashes, None, 160)
    assert {(5, 400), (6, 401), (300, 403)} <= set(zip(pairs.first, pairs.second, strict=True))
    assert (7, 402) not in set(zip(pairs.first, pairs.second, strict=True))
    across = near_duplicate_pairs(hashes, other, threshold=160)
    assert set(zip(*across, strict=True)) == _brute_force(hashes, other, 160)
    assert len(across.first) >= 3


def test_matching_crosses_tile_borders():
    rng = np.random.default_rng(1)
    hashes = rng.integers(0, 2**64 - 1, size=(9000, 16), dtype=np.uint64, endpoint=True)
    planted = [(0, 8999), (127, 128), (8191, 8192), (4000, 8500)]
    for source, target in planted:
        hashes[target] = _flip_bits(hashes[source], 10, rng)
    pairs = near_duplicate_pairs(hashes, threshold=DEFAULT_THRESHOLD, num_threads=2)
    assert set(zip(pairs.first, pairs.second, strict=True)) == set(planted)
    assert (pairs.distance == 10).all()


def test_groups_are_the_connected_components_of_the_pairs():
    pairs = RowPairs(np.array([0, 1, 5]), np.array([1, 3, 6]), np.array([1, 2, 3]))
    groups = duplicate_groups(8, pairs)
    assert groups[0] == groups[1] == groups[3]
    assert groups[5] == groups[6]
    assert len({groups[0], groups[2], groups[4], groups[5], groups[7]}) == 5


@pytest.mark.parametrize("threshold", [-1, MAX_DISTANCE // 2, 2.5, True, "160"])
def test_a_bad_threshold_is_refused(threshold):
    with pytest.raises(HPAInputError, match="threshold"):
        check_threshold(threshold)


def test_the_config_threshold_is_the_documented_default():
    config = OmegaConf.load(REPO / "conf/data/hpa.yaml")
    assert config.duplicates.threshold == DEFAULT_THRESHOLD
    assert config.duplicates.enabled is True
    assert config.external == []


def test_split_pair_counts_name_each_pair_once():
    counts = split_pair_counts(
        np.array(["val", "train", "external", "test", "train"]),
        np.array(["train", "val", "test", "external", "train"]),
    )
    assert counts["train-val"] == 2
    assert counts["external-test"] == 2
    assert counts["train-train"] == 1
    assert sum(counts.values()) == 5
    assert RunDir.LEAK_REPORT.endswith(".csv")
