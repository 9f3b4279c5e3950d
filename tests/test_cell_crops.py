"""Cell crops: crop_cells on hand-made label images, CropCache on a small synthetic cell set."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from hpa.core.errors import HPAInputError
from hpa.data.cells import (
    CropCache,
    MaskCache,
    MaskFolderSegmenter,
    build_segmenter,
    crop_cells,
    crop_positions,
)
from hpa.data.reader import read_ids_csv, read_sample
from hpa.data.synthetic.cells import ensure_cell_set

BACKGROUND = 5
"""Pixel value of the background in every channel of the hand-made image."""

# --------------------------------------------------------------------------------------------
# crop_cells on a hand-made image
# --------------------------------------------------------------------------------------------


def hand_made_cells(scale: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(image, labels), 80 x 80 times ``scale``: cell 1 (rows 20..40, cols 10..30), cell 3 beside
    it (cols 31..51: inside cell 1's window), cell 7 cut by the left border (rows 50..70, cols
    0..10). Cell c has value 10 * c + channel in channel ``channel``, the background 5."""
    labels = np.zeros((80, 80), np.int32)
    labels[20:40, 10:30] = 1
    labels[20:40, 31:51] = 3
    labels[50:70, 0:10] = 7
    labels = np.kron(labels, np.ones((scale, scale), np.int32))
    channel = np.arange(4, dtype=np.uint8)
    image = np.where(labels[..., None] > 0, 10 * labels[..., None] + channel, BACKGROUND)
    return image.astype(np.uint8), labels


def cell_value(cell_id: int) -> np.ndarray:
    return 10 * cell_id + np.arange(4, dtype=np.uint8)


def test_crops_are_the_margined_squares_around_each_cell_with_other_cells_zeroed():
    image, labels = hand_made_cells()
    cell_ids, crops = crop_cells(image, labels, 24)  # 20 px cells * 1.2: no resize
    assert cell_ids.dtype == np.int32 and cell_ids.tolist() == [1, 3, 7]
    assert crops.shape == (3, 24, 24, 4) and crops.dtype == np.uint8
    expected = image[18:42, 8:32].copy()  # centred on cell 1, 2 px of margin on each side
    expected[np.isin(labels[18:42, 8:32], [3, 7])] = 0
    assert np.array_equal(crops[0], expected)
    assert (crops[0][2:22, 2:22] == cell_value(1)).all()
    assert (crops[0][2:22, 23] == 0).all()  # column 31: cell 3, masked
    assert (crops[0][:2] == BACKGROUND).all()  # background is kept
    assert (crops[1][2:22, 2:22] == cell_value(3)).all()
    assert (crops[1][2:22, 0] == 0).all()  # column 29 of cell 1, in cell 3's window


def test_without_mask_others_the_neighbours_stay():
    image, labels = hand_made_cells()
    _, crops = crop_cells(image, labels, 24, mask_others=False)
    assert np.array_equal(crops[0], image[18:42, 8:32])
    assert (crops[0][2:22, 23] == cell_value(3)).all()


def test_a_cell_on_the_border_is_padded_with_zeros():
    image, labels = hand_made_cells()
    _, crops = crop_cells(image, labels, 24)
    border = crops[2]  # cell 7: 20 x 10 box at the left edge, window cols -7..17
    assert (border[:, :7] == 0).all()
    assert (border[2:22, 7:17] == cell_value(7)).all()
    assert (border[:2, 7:] == BACKGROUND).all()


def test_a_cell_fills_its_crop_the_same_way_at_any_resolution():
    image, labels = hand_made_cells()
    double_image, double_labels = hand_made_cells(scale=2)
    _, crops = crop_cells(image, labels, 24)
    _, double_crops = crop_cells(double_image, double_labels, 24)  # shrunk by INTER_AREA
    assert np.array_equal(crops, double_crops)


@pytest.mark.parametrize("size", [12, 48, 33])
def test_resized_crops_stay_centred(size: int):
    image, labels = hand_made_cells()
    _, crops = crop_cells(image, labels, size, margin=0.25)
    assert crops.shape == (3, size, size, 4)
    centre = crops[0][size // 2, size // 2]
    assert np.array_equal(centre, cell_value(1))
    cell = (crops[0] == cell_value(1)).all(axis=2)
    rows, cols = np.nonzero(cell)
    middle = (size - 1) / 2
    assert abs(rows.mean() - middle) < 0.6 and abs(cols.mean() - middle) < 0.6


def test_no_cells_give_empty_arrays_of_the_right_shape():
    cell_ids, crops = crop_cells(np.zeros((50, 60, 4), np.uint8), np.zeros((50, 60), np.uint16), 32)
    assert cell_ids.shape == (0,) and cell_ids.dtype == np.int32
    assert crops.shape == (0, 32, 32, 4) and crops.dtype == np.uint8


def test_an_image_and_labels_of_different_sizes_are_refused():
    image, _ = hand_made_cells()
    with pytest.raises(HPAInputError, match=r"\(80, 80, 4\).*\(40, 40\)"):
        crop_cells(image, np.zeros((40, 40), np.int32), 16)


# --------------------------------------------------------------------------------------------
# CropCache on a synthetic cell set
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cell_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """(train image folder, ids) of 6 synthetic 128 px images."""
    root = tmp_path_factory.mktemp("cells") / "set"
    ensure_cell_set(root, num_train=6, num_test=0, sizes=(128,), seed=0, progress=False)
    return root / "train", [str(i) for i in read_ids_csv(root / "train.csv", "ID")]


def watershed_masks(cache_dir: Path) -> MaskCache:
    return MaskCache(cache_dir, build_segmenter({"name": "watershed"}))


def channels_last(image_dir: Path, sample_id: str) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(read_sample(image_dir, sample_id), 0, -1))


def test_cache_stores_the_crops_of_crop_cells(cell_set, tmp_path: Path):
    images, ids = cell_set
    masks = watershed_masks(tmp_path / "masks")
    cache = CropCache(tmp_path / "crops", masks, size=32)
    assert not cache.has(ids[0])
    assert cache.ensure(images, ids) == ids
    assert all(masks.has(sample_id) and cache.has(sample_id) for sample_id in ids)
    for sample_id in ids:
        cell_ids, crops = cache.load(sample_id)
        expected_ids, expected = crop_cells(
            channels_last(images, sample_id), masks.load(sample_id), 32
        )
        assert np.array_equal(cell_ids, expected_ids) and len(cell_ids) >= 3
        assert np.array_equal(crops, expected)
        assert np.array_equal(cache.load_crop(sample_id, len(cell_ids) - 1), crops[-1])
    with pytest.raises(IndexError, match="no position"):
        cache.load_crop(ids[0], len(cache.load(ids[0])[0]))
    settings = json.loads((cache.folder / "settings.json").read_text())
    assert settings["size"] == 32 and settings["mask_others"] is True
    assert settings["segmenter"]["name"] == "watershed"


def test_index_lists_every_cell_and_skips_images_without_cells(cell_set, tmp_path: Path):
    images, ids = cell_set
    truth = tmp_path / "truth"
    shutil.copytree(images.parent / "cell_truth", truth)
    empty = cv2.imread(str(truth / f"{ids[1]}_cells.png"), cv2.IMREAD_UNCHANGED) * 0
    cv2.imwrite(str(truth / f"{ids[1]}_cells.png"), empty)
    masks = MaskCache(tmp_path / "masks", MaskFolderSegmenter(folder=str(truth)))
    cache = CropCache(tmp_path / "crops", masks, size=16)
    cache.ensure(images, ids)
    assert cache.load(ids[1])[1].shape == (0, 16, 16, 4)
    image_rows, cell_ids = cache.index(ids)
    assert image_rows.shape == cell_ids.shape and 1 not in image_rows
    positions = crop_positions(image_rows)
    for row, sample_id in enumerate(ids):
        assert np.array_equal(cell_ids[image_rows == row], cache.load(sample_id)[0])
    for entry in [0, len(cell_ids) // 2, len(cell_ids) - 1]:
        sample_id, position = ids[image_rows[entry]], positions[entry]
        stored_ids, crops = cache.load(sample_id)
        assert stored_ids[position] == cell_ids[entry]
        assert np.array_equal(cache.load_crop(sample_id, position), crops[position])
    empty_rows, empty_ids = cache.index([ids[1]])
    assert empty_rows.shape == empty_ids.shape == (0,)


def test_a_rerun_crops_only_the_missing_images(cell_set, tmp_path: Path):
    images, ids = cell_set
    cache = CropCache(tmp_path / "crops", watershed_masks(tmp_path / "masks"), size=24)
    cache.ensure(images, ids)
    files = sorted(cache.folder.glob("*.npy"))
    assert len(files) == 2 * len(ids)
    written = {path: path.stat().st_mtime_ns for path in files}
    before = cache.load(ids[2])
    assert cache.ensure(images, ids) == []
    cache.crops_path(ids[2]).unlink()
    cache.ids_path(ids[4]).unlink()
    assert cache.ensure(images, ids) == [ids[2], ids[4]]
    rewritten = {cache.crops_path(ids[2]), cache.ids_path(ids[2])}
    rewritten |= {cache.crops_path(ids[4]), cache.ids_path(ids[4])}
    for path, mtime in written.items():
        if path not in rewritten:
            assert path.stat().st_mtime_ns == mtime, path.name
    after = cache.load(ids[2])
    assert np.array_equal(before[0], after[0]) and np.array_equal(before[1], after[1])
    assert not list(cache.folder.glob(".*.tmp"))


def test_two_processes_write_the_files_of_one(cell_set, tmp_path: Path):
    images, ids = cell_set
    masks = watershed_masks(tmp_path / "masks")
    one = CropCache(tmp_path / "one", masks, size=24)
    two = CropCache(tmp_path / "two", masks, size=24)
    one.ensure(images, ids, processes=1)
    assert two.ensure(images, ids, processes=2) == ids
    for sample_id in ids:
        for path in (one.crops_path(sample_id), one.ids_path(sample_id)):
            assert path.read_bytes() == (two.folder / path.name).read_bytes()


def test_other_settings_crop_into_another_folder(tmp_path: Path):
    masks = watershed_masks(tmp_path / "masks")
    default = CropCache(tmp_path, masks, size=32)
    assert (
        CropCache(tmp_path, watershed_masks(tmp_path / "masks"), size=32).folder == default.folder
    )
    assert default.folder.parent == tmp_path and default.folder.name.startswith("watershed-s32-")
    others = [
        CropCache(tmp_path, masks, size=64),
        CropCache(tmp_path, masks, size=32, margin=0.2),
        CropCache(tmp_path, masks, size=32, mask_others=False),
        CropCache(
            tmp_path,
            MaskCache(
                tmp_path / "masks", build_segmenter({"name": "watershed", "cell_threshold": 0.4})
            ),
            32,
        ),
    ]
    folders = {default.folder, *(cache.folder for cache in others)}
    assert len(folders) == 1 + len(others)


def test_a_corrupt_or_missing_file_says_what_to_do(cell_set, tmp_path: Path):
    images, ids = cell_set
    cache = CropCache(tmp_path / "crops", watershed_masks(tmp_path / "masks"), size=16)
    cache.ensure(images, ids[:2])
    crops_file = cache.crops_path(ids[0])
    crops_file.write_bytes(crops_file.read_bytes()[:300])
    for read in (cache.load, lambda sample_id: cache.load_crop(sample_id, 3)):
        with pytest.raises(HPAInputError, match=f"{crops_file}.*delete it"):
            read(ids[0])
    cache.ids_path(ids[1]).write_bytes(b"not a numpy file")
    with pytest.raises(HPAInputError, match=f"{cache.ids_path(ids[1])}.*delete it"):
        cache.index(ids[:2])
    with pytest.raises(HPAInputError, match=f"no cell crops for sample '{ids[3]}'.*run ensure"):
        cache.load_crop(ids[3], 0)
    with pytest.raises(HPAInputError, match=f"no cell crops for sample '{ids[3]}'.*run ensure"):
        cache.load(ids[3])


def test_a_mask_of_another_size_names_the_sample(cell_set, tmp_path: Path):
    images, ids = cell_set
    masks = watershed_masks(tmp_path / "masks")
    masks.folder.mkdir(parents=True)
    cv2.imwrite(str(masks.path(ids[0])), np.ones((64, 64), np.uint16))
    cache = CropCache(tmp_path / "crops", masks, size=16)
    with pytest.raises(HPAInputError, match=f"sample '{ids[0]}'.*\\(128, 128, 4\\).*\\(64, 64\\)"):
        cache.ensure(images, ids[:1])
    assert not cache.has(ids[0])
