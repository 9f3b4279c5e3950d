"""Cell segmentation (hpa.data.cells): the providers on synthetic images with known cells, their
config, and the mask cache."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from omegaconf import OmegaConf

from hpa.core.errors import HPAInputError
from hpa.core.labels import CHANNELS
from hpa.data.cells import (
    CellposeSegmenter,
    MaskCache,
    MaskFolderSegmenter,
    Segmenter,
    WatershedSegmenter,
    as_channel_stack,
    build_segmenter,
    provider_settings,
    read_native_sample,
)
from hpa.data.cells.cellpose_model import INSTALL_HINT, cellpose_weights_path
from hpa.data.cells.mask_cache import shard_ids
from hpa.data.cells.synthetic import draw_cells, synthetic_cells

REPO = Path(__file__).resolve().parents[1]
CELLPOSE_INSTALLED = importlib.util.find_spec("cellpose") is not None
MATCH_IOU = 0.6


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def iou_matrix(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """IoU of every truth cell (rows) with every predicted cell (columns), background left out."""
    rows, cols = int(truth.max()) + 1, int(predicted.max()) + 1
    pairs = truth.astype(np.int64).ravel() * cols + predicted.ravel()
    overlap = np.bincount(pairs, minlength=rows * cols).reshape(rows, cols)
    union = overlap.sum(1)[:, None] + overlap.sum(0)[None, :] - overlap
    return (overlap / np.maximum(union, 1))[1:, 1:]


def matched(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Whether each truth cell has a predicted cell at IoU >= 0.6. Above 0.5 a match is
    one-to-one: two cells cannot both overlap one cell by more than half their union."""
    ious = iou_matrix(truth, predicted)
    if ious.shape[1] == 0:
        return np.zeros(ious.shape[0], bool)
    return ious.max(axis=1) >= MATCH_IOU


def write_sample(image_dir: Path, sample_id: str, image: np.ndarray) -> None:
    """The (4, H, W) uint8 or uint16 RGBY ``image`` as four Kaggle-style channel PNGs."""
    image_dir.mkdir(parents=True, exist_ok=True)
    for color, plane in zip(CHANNELS, image, strict=True):
        assert cv2.imwrite(str(image_dir / f"{sample_id}_{color}.png"), plane)


def write_samples(image_dir: Path, count: int, side: int = 256) -> list[str]:
    ids = [f"s{index:02d}" for index in range(count)]
    for index, sample_id in enumerate(ids):
        write_sample(image_dir, sample_id, draw_cells(side, seed=index)[0])
    return ids


# --------------------------------------------------------------------------------------------
# Watershed
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("side,seed", [(256, 0), (384, 1), (512, 2), (448, 3)])
def test_watershed_finds_the_truth_cells(side: int, seed: int):
    image, truth = draw_cells(side, seed)
    cells = WatershedSegmenter().segment(image)
    assert cells.dtype == np.int32 and cells.shape == (side, side)
    assert set(np.unique(cells)) == set(range(cells.max() + 1))  # labels 0..K, none skipped
    found = matched(truth, cells)
    assert found.mean() >= 0.85, f"{found.sum()} of {len(found)} cells found"


def test_watershed_keeps_the_border_cell_and_splits_touching_nuclei():
    image, truth = draw_cells(512, seed=0)
    cells = synthetic_cells(seed=0)
    border = next(label for label, cell in enumerate(cells, start=1) if cell.x < 0.05)
    daughters = [len(cells) - 1, len(cells)]  # the last two cells, their nuclei touching
    assert (truth[:, 0] == border).any()  # the border cell is cut by the image edge
    found = matched(truth, WatershedSegmenter().segment(image))
    assert found[border - 1]
    assert found[daughters[0] - 1] and found[daughters[1] - 1]


def test_nuclei_split_at_a_waist_but_not_along_an_elongated_nucleus():
    blue = np.zeros((256, 256), np.float32)
    cv2.ellipse(blue, (70, 128), (45, 16), 30, 0, 360, 0.8, -1)  # elongated: one nucleus
    cv2.circle(blue, (160, 128), 20, 0.8, -1)  # two round nuclei touching at a waist
    cv2.circle(blue, (194, 128), 20, 0.8, -1)
    nuclei = WatershedSegmenter().find_nuclei(blue, scale=1.0)  # sizes as in a 512 px image
    assert nuclei.max() == 3
    assert len(np.unique(nuclei[110:146, 30:110])) == 2  # background and one nucleus
    assert nuclei[128, 150] != nuclei[128, 204]


@pytest.mark.parametrize("max_side", [1024, None])
def test_watershed_gives_the_same_cells_at_512_and_2048_px(max_side: int | None):
    """Size settings scale with the image: the 2048 px copy of a 512 px image gives its cells."""
    image, _ = draw_cells(512, seed=4)
    large = np.stack([cv2.resize(p, (2048, 2048), interpolation=cv2.INTER_LINEAR) for p in image])
    segmenter = WatershedSegmenter(max_side=max_side)
    small_cells = segmenter.segment(image)
    large_cells = segmenter.segment(large)
    assert large_cells.shape == (2048, 2048)
    shrunk = cv2.resize(large_cells, (512, 512), interpolation=cv2.INTER_NEAREST)
    assert small_cells.max() >= 10
    assert matched(small_cells, shrunk).mean() >= 0.9
    assert matched(shrunk, small_cells).mean() >= 0.9  # and no extra cells at 2048


def test_segment_takes_a_channel_mapping_and_16_bit_images():
    image, _ = draw_cells(256, seed=5)
    segmenter = WatershedSegmenter()
    expected = segmenter.segment(image)
    mapping = {color: plane for color, plane in zip(CHANNELS, image, strict=True)}
    assert np.array_equal(segmenter.segment(mapping), expected)
    sixteen = image.astype(np.uint16) * 257  # the same levels in 16 bits
    assert np.array_equal(segmenter.segment(sixteen), expected)
    with pytest.raises(HPAInputError, match="yellow"):
        segmenter.segment({color: image[0] for color in ("red", "green", "blue")})
    with pytest.raises(HPAInputError, match=r"\(4, H, W\)"):
        segmenter.segment(image[:3])


def test_an_empty_image_has_no_cells():
    cells = WatershedSegmenter().segment(np.zeros((4, 128, 128), np.uint8))
    assert cells.shape == (128, 128) and not cells.any()


def test_watershed_refuses_bad_settings():
    with pytest.raises(HPAInputError, match="cell_sigma"):
        WatershedSegmenter(cell_sigma=0)
    with pytest.raises(HPAInputError, match="max_side"):
        WatershedSegmenter(max_side=8)


# --------------------------------------------------------------------------------------------
# Native reading
# --------------------------------------------------------------------------------------------


def test_read_native_sample_keeps_size_and_16_bit_depth(tmp_path: Path):
    image, _ = draw_cells(96, seed=0)
    sixteen = image.astype(np.uint16) * 257 + 100  # levels 8 bits cannot hold
    write_sample(tmp_path, "a", sixteen)
    read = read_native_sample(tmp_path, "a")
    assert read.dtype == np.float32 and read.shape == (4, 96, 96)
    assert np.allclose(read, sixteen / 65535.0)
    assert np.array_equal(as_channel_stack(sixteen), read)


def test_read_native_sample_refuses_channels_of_different_sizes(tmp_path: Path):
    write_sample(tmp_path, "a", draw_cells(64, seed=0)[0])
    cv2.imwrite(str(tmp_path / "a_green.png"), np.zeros((32, 32), np.uint8))
    with pytest.raises(HPAInputError, match=r"a_green.png 32x32.*a_blue.png 64x64"):
        read_native_sample(tmp_path, "a")


# --------------------------------------------------------------------------------------------
# Masks made elsewhere
# --------------------------------------------------------------------------------------------


def test_mask_folder_reads_label_images(tmp_path: Path):
    image, truth = draw_cells(128, seed=0)
    write_sample(tmp_path / "images", "a", image)
    write_sample(tmp_path / "images", "b", image)
    (tmp_path / "masks").mkdir()
    cv2.imwrite(str(tmp_path / "masks/a_cells.png"), truth.astype(np.uint16))
    cv2.imwrite(str(tmp_path / "masks/b_cells.png"), truth.astype(np.uint8))
    segmenter = MaskFolderSegmenter(folder=str(tmp_path / "masks"))
    for sample_id in ("a", "b"):
        labels = segmenter.segment_sample(tmp_path / "images", sample_id)
        assert labels.dtype == np.int32 and np.array_equal(labels, truth)


def test_mask_folder_errors_name_the_file(tmp_path: Path):
    image, truth = draw_cells(128, seed=0)
    images = tmp_path / "images"
    for sample_id in ("missing", "colour", "small"):
        write_sample(images, sample_id, image)
    masks = tmp_path / "masks"
    masks.mkdir()
    cv2.imwrite(str(masks / "colour_cells.png"), np.zeros((128, 128, 3), np.uint8))
    cv2.imwrite(str(masks / "small_cells.png"), truth[:100, :90].astype(np.uint16))
    segmenter = MaskFolderSegmenter(folder=str(masks))
    with pytest.raises(HPAInputError, match=r"missing cell mask .*missing_cells.png"):
        segmenter.segment_sample(images, "missing")
    with pytest.raises(HPAInputError, match=r"colour_cells.png has 3 plane\(s\) of uint8"):
        segmenter.segment_sample(images, "colour")
    with pytest.raises(HPAInputError, match=r"small_cells.png is 90x100 px .*small_blue.png"):
        segmenter.segment_sample(images, "small")
    with pytest.raises(HPAInputError, match="is 128x128 px"):
        segmenter.segment_sample(images, "small")


# --------------------------------------------------------------------------------------------
# Cellpose: everything up to loading the weights
# --------------------------------------------------------------------------------------------


@pytest.mark.skipif(CELLPOSE_INSTALLED, reason="cellpose is installed")
def test_cellpose_without_the_package_says_how_to_install_it():
    with pytest.raises(HPAInputError, match=INSTALL_HINT.replace("[", r"\[").replace("]", r"\]")):
        CellposeSegmenter()
    with pytest.raises(HPAInputError, match="hpa\\[cellpose\\]"):
        build_segmenter({"name": "cellpose", "diameter": 80})


def test_cellpose_weights_are_looked_up_without_downloading(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLPOSE_LOCAL_MODELS_PATH", str(tmp_path / "models"))
    with pytest.raises(HPAInputError, match=f"not found at {tmp_path}/models/cyto3"):
        cellpose_weights_path("cyto3", None, major_version=3)
    with pytest.raises(HPAInputError, match=f"{tmp_path}/models/cytotorch_0"):
        cellpose_weights_path("cyto", None, major_version=3)
    with pytest.raises(HPAInputError, match=f"{tmp_path}/models/cpsam"):
        cellpose_weights_path("cpsam", None, major_version=4)
    with pytest.raises(HPAInputError, match=f"weights file not found: {tmp_path}/mine.pt"):
        cellpose_weights_path("cpsam", str(tmp_path / "mine.pt"), major_version=4)
    (tmp_path / "models").mkdir()
    (tmp_path / "models/cyto3").write_bytes(b"weights")
    (tmp_path / "mine.pt").write_bytes(b"weights")
    assert cellpose_weights_path("cyto3", None, 3) == tmp_path / "models/cyto3"
    assert cellpose_weights_path("cpsam", str(tmp_path / "mine.pt"), 4) == tmp_path / "mine.pt"


@pytest.mark.skipif(not CELLPOSE_INSTALLED, reason="cellpose is not installed")
def test_cellpose_without_weights_names_the_path(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLPOSE_LOCAL_MODELS_PATH", str(tmp_path / "models"))
    with pytest.raises(HPAInputError, match=f"{tmp_path}/models/"):
        CellposeSegmenter()
    with pytest.raises(HPAInputError, match=f"{tmp_path}/absent.pt"):
        CellposeSegmenter(model_path=str(tmp_path / "absent.pt"))
    assert not (tmp_path / "models").exists()  # nothing was downloaded


# --------------------------------------------------------------------------------------------
# build_segmenter and conf/segment
# --------------------------------------------------------------------------------------------


def test_build_segmenter_refuses_unknown_names_and_settings():
    with pytest.raises(HPAInputError, match="watershed, cellpose, masks"):
        build_segmenter({"name": "watershedd"})
    with pytest.raises(HPAInputError, match="watershed, cellpose, masks"):
        build_segmenter({})
    with pytest.raises(HPAInputError, match=r"cell_sigmaa of segment=watershed.*cell_sigma"):
        build_segmenter({"name": "watershed", "cell_sigmaa": 2.0})
    with pytest.raises(HPAInputError, match="segment=masks needs segment.folder"):
        build_segmenter({"name": "masks"})
    built = build_segmenter({"name": "watershed", "cell_threshold": 0.4})
    assert built == WatershedSegmenter(cell_threshold=0.4)
    assert isinstance(built, Segmenter)
    assert isinstance(MaskFolderSegmenter(folder="."), Segmenter)


@pytest.mark.parametrize("name", ["watershed", "cellpose", "masks"])
def test_each_segment_config_lists_exactly_its_providers_settings(name: str):
    node = OmegaConf.load(REPO / f"conf/segment/{name}.yaml")
    assert node.name == name
    assert list(node.keys()) == ["name", *provider_settings(name)]


def test_segment_configs_build(tmp_path: Path):
    watershed = OmegaConf.load(REPO / "conf/segment/watershed.yaml")
    assert build_segmenter(watershed) == WatershedSegmenter()  # the yaml holds the defaults
    masks = OmegaConf.load(REPO / "conf/segment/masks.yaml")
    with pytest.raises(HPAInputError, match="needs segment.folder"):
        build_segmenter(masks)
    masks.folder = str(tmp_path)
    assert build_segmenter(masks).folder == str(tmp_path.resolve())


# --------------------------------------------------------------------------------------------
# Mask cache
# --------------------------------------------------------------------------------------------


def test_mask_cache_stores_loads_and_resumes(tmp_path: Path):
    ids = write_samples(tmp_path / "images", 3)
    segmenter = WatershedSegmenter()
    cache = MaskCache(tmp_path / "cache", segmenter)
    assert cache.ensure_masks(tmp_path / "images", ids) == ids
    for sample_id in ids:
        expected = segmenter.segment_sample(tmp_path / "images", sample_id)
        assert np.array_equal(cache.load(sample_id), expected)
    written = {sample_id: cache.path(sample_id).stat().st_mtime_ns for sample_id in ids}
    assert cache.ensure_masks(tmp_path / "images", ids) == []  # all cached: nothing to do
    cache.path(ids[1]).unlink()
    assert cache.ensure_masks(tmp_path / "images", ids) == [ids[1]]
    for sample_id in (ids[0], ids[2]):
        assert cache.path(sample_id).stat().st_mtime_ns == written[sample_id]
    settings = OmegaConf.load(cache.folder / "settings.json")
    assert settings.name == "watershed" and settings.settings.cell_sigma == 3.0
    with pytest.raises(HPAInputError, match="no cell mask for sample 'other'"):
        cache.load("other")


def test_changed_settings_cache_into_another_folder(tmp_path: Path):
    default = MaskCache(tmp_path, WatershedSegmenter())
    assert MaskCache(tmp_path, WatershedSegmenter()).folder == default.folder
    changed = MaskCache(tmp_path, WatershedSegmenter(cell_threshold=0.4))
    assert changed.folder != default.folder
    assert default.folder.name.startswith("watershed-")
    masks = MaskCache(tmp_path, MaskFolderSegmenter(folder=str(tmp_path / "m")))
    assert masks.folder.name.startswith("masks-")


def test_two_processes_give_the_masks_of_one(tmp_path: Path):
    ids = write_samples(tmp_path / "images", 4)
    one = MaskCache(tmp_path / "one", WatershedSegmenter())
    two = MaskCache(tmp_path / "two", WatershedSegmenter())
    assert one.ensure_masks(tmp_path / "images", ids, processes=1) == ids
    assert two.ensure_masks(tmp_path / "images", ids, processes=2) == ids
    for sample_id in ids:
        assert one.load(sample_id).max() >= 10
        assert np.array_equal(one.load(sample_id), two.load(sample_id))


def test_shards_cover_every_id_exactly_once(tmp_path: Path):
    ids = [f"id{index}" for index in range(11)]
    shards = [shard_ids(ids, (index, 3)) for index in range(3)]
    assert sorted(sum(shards, [])) == sorted(ids)
    assert shards[1] == ["id1", "id4", "id7", "id10"]
    for bad in [(3, 3), (-1, 3), (0, 0)]:
        with pytest.raises(HPAInputError, match="shard must be"):
            shard_ids(ids, bad)
    images = write_samples(tmp_path / "images", 5, side=128)
    cache = MaskCache(tmp_path / "cache", WatershedSegmenter())
    done = [cache.ensure_masks(tmp_path / "images", images, shard=(i, 2)) for i in range(2)]
    assert done == [images[0::2], images[1::2]]
    assert all(cache.has(sample_id) for sample_id in images)


@pytest.mark.parametrize("processes", [1, 2])
def test_a_failed_image_keeps_the_finished_masks(tmp_path: Path, processes: int):
    images = tmp_path / "images"
    ids = write_samples(images, 3, side=96)
    masks = tmp_path / "masks"
    masks.mkdir()
    label = np.zeros((96, 96), np.uint16)
    label[10:40, 10:40] = 1
    for sample_id in (ids[0], ids[2]):
        cv2.imwrite(str(masks / f"{sample_id}_cells.png"), label)
    cache = MaskCache(tmp_path / "cache", MaskFolderSegmenter(folder=str(masks)))
    with pytest.raises(HPAInputError, match=f"missing cell mask .*{ids[1]}_cells.png"):
        cache.ensure_masks(images, ids, processes)
    assert cache.has(ids[0]) and not cache.has(ids[1])
    assert not list(cache.folder.glob(".*.tmp"))  # the failed write left nothing behind
    cv2.imwrite(str(masks / f"{ids[1]}_cells.png"), label)
    remaining = [sample_id for sample_id in ids if not cache.has(sample_id)]
    assert cache.ensure_masks(images, ids, processes) == remaining  # continues where it stopped
    assert np.array_equal(cache.load(ids[1]), label)


def test_a_killed_run_leaves_complete_masks_and_the_rerun_finishes(tmp_path: Path):
    """SIGKILL while an image is being segmented: the masks on disk are whole, the temporary
    file of an interrupted write is never read, and a re-run segments only the rest."""
    images = tmp_path / "images"
    ids = write_samples(images, 3, side=1024)  # ~0.5 s each at the native size: time to kill
    segmenter = WatershedSegmenter(max_side=None)
    cache = MaskCache(tmp_path / "cache", segmenter)
    script = (
        "from hpa.data.cells import MaskCache, WatershedSegmenter;"
        f"MaskCache({str(tmp_path / 'cache')!r}, WatershedSegmenter(max_side=None))"
        f".ensure_masks({str(images)!r}, {ids!r})"
    )
    child = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while not cache.has(ids[0]) and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert cache.has(ids[0])
    stale = cache.folder / f".{ids[2]}.png.killed.tmp"  # as a write killed halfway leaves it
    stale.write_bytes(cache.path(ids[0]).read_bytes()[:100])
    remaining = [sample_id for sample_id in ids if not cache.has(sample_id)]
    assert remaining  # killed before the end
    assert cache.ensure_masks(images, ids) == remaining
    for sample_id in ids:
        labels = cache.load(sample_id)
        assert labels.shape == (1024, 1024) and labels.max() >= 10
