"""The packed image cache: exact content, rebuilds, interrupted builds, fallback folder, workers."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from hpa.core.errors import HPAInputError
from hpa.core.labels import HPA2018
from hpa.data.cache import CacheFiles, PackedImages, build_cache, cache_folder, ensure_cache
from hpa.data.datamodule import HPADataModule
from hpa.data.dataset import RGBYDataset, collate_samples
from hpa.data.reader import read_labels_csv, read_sample
from hpa.data.synthetic import generate_dataset

REPO = Path(__file__).resolve().parents[1]
SIZE = 48  # the synthetic images are 64 px: the cache resizes them


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("cache") / "set", 40, 64, 0, progress=False)


@pytest.fixture
def data_root(synthetic_root: Path, tmp_path: Path) -> Path:
    """A private copy of the small synthetic set (tests change files in it)."""
    root = tmp_path / "set"
    shutil.copytree(synthetic_root, root)
    return root


def _ids(root: Path) -> np.ndarray:
    return read_labels_csv(root / "train.csv", HPA2018)[0]


def _files(root: Path, size: int = SIZE) -> CacheFiles:
    return CacheFiles.at(root / "cache", f"train-s{size}")


def _decoded(root: Path, ids: np.ndarray, size: int = SIZE) -> np.ndarray:
    """The decoded images in the cache's layout: N x S x S x 4 (rows channels-last)."""
    return np.stack([read_sample(root / "train", i, size).transpose(1, 2, 0) for i in ids])


def test_cache_holds_exactly_the_decoded_images_and_their_ids(data_root: Path):
    ids = _ids(data_root)
    images = ensure_cache(data_root / "train", ids, SIZE, num_workers=2)

    files = _files(data_root)
    assert images.path == files.images
    assert images.shape == (len(ids), SIZE, SIZE, 4) and images.image_size == SIZE
    packed = np.load(files.images)  # a standard .npy file
    np.testing.assert_array_equal(packed, _decoded(data_root, ids))
    # rows read back as 4 x S x S images, and into a given buffer as S x S x 4
    chw = np.stack([images[row] for row in range(len(ids))])
    np.testing.assert_array_equal(chw, packed.transpose(0, 3, 1, 2))
    buffer = np.empty((SIZE, SIZE, 4), dtype=np.uint8)
    np.testing.assert_array_equal(images.read_into(3, buffer), packed[3])
    with pytest.raises(ValueError, match="C-contiguous"):
        images.read_into(3, buffer.transpose(1, 0, 2))
    np.testing.assert_array_equal(np.load(files.ids), ids)
    stored = json.loads(files.fingerprint.read_text())
    assert stored["image_size"] == SIZE and stored["num_samples"] == len(ids)
    assert stored["source"]["count"] == 4 * len(ids)
    with pytest.raises(IndexError):
        images[len(ids)]


def test_one_process_and_several_build_the_same_cache(data_root: Path, tmp_path: Path):
    ids = _ids(data_root)
    one, several = CacheFiles.at(tmp_path, "one"), CacheFiles.at(tmp_path, "several")
    build_cache(one, data_root / "train", ids, SIZE, num_workers=1)
    build_cache(several, data_root / "train", ids, SIZE, num_workers=2)
    np.testing.assert_array_equal(np.load(one.images), np.load(several.images))


def test_a_matching_cache_is_reused(data_root: Path):
    ids = _ids(data_root)
    ensure_cache(data_root / "train", ids, SIZE)
    built = _files(data_root).images.stat().st_mtime_ns
    ensure_cache(data_root / "train", ids, SIZE)
    assert _files(data_root).images.stat().st_mtime_ns == built


def test_changed_sources_ids_or_size_rebuild_the_cache(data_root: Path):
    ids = _ids(data_root)
    image_dir = data_root / "train"
    ensure_cache(image_dir, ids, SIZE)

    # a source image replaced by another (same name): its size and mtime change
    changed = image_dir / f"{ids[0]}_green.png"
    shutil.copyfile(image_dir / f"{ids[1]}_green.png", changed)
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    images = ensure_cache(image_dir, ids, SIZE)
    np.testing.assert_array_equal(images[0], read_sample(image_dir, ids[0], SIZE))
    np.testing.assert_array_equal(images[0][1], images[1][1])

    # another csv (a subset of the ids, reordered)
    subset = ids[::-2]
    images = ensure_cache(image_dir, subset, SIZE)
    assert len(images) == len(subset)
    np.testing.assert_array_equal(np.load(images.path), _decoded(data_root, subset))

    # another image size: a cache of its own
    other = ensure_cache(image_dir, subset, 32)
    assert other.path == _files(data_root, 32).images and other.image_size == 32
    np.testing.assert_array_equal(np.load(other.path), _decoded(data_root, subset, 32))


def test_an_interrupted_build_is_never_read_and_is_rebuilt(data_root: Path):
    ids = _ids(data_root)
    image_dir = data_root / "train"
    files = _files(data_root)
    ensure_cache(image_dir, ids, SIZE)
    # What a build killed after writing the array but before its fingerprint leaves: an array
    # of zeros in place, no fingerprint, and the temporary file of a later build.
    np.save(files.images, np.zeros((len(ids), 4, SIZE, SIZE), dtype=np.uint8))
    files.fingerprint.unlink()
    stale = files.images.parent / f".{files.images.name}.abc123.tmp"
    stale.write_bytes(b"partial")

    images = ensure_cache(image_dir, ids, SIZE)
    np.testing.assert_array_equal(np.load(images.path), _decoded(data_root, ids))
    assert not stale.exists()
    assert files.fingerprint.is_file()


def test_a_build_that_fails_midway_leaves_no_cache_behind(data_root: Path):
    ids = _ids(data_root)
    image_dir = data_root / "train"
    ensure_cache(image_dir, ids, SIZE)
    (image_dir / f"{ids[-1]}_blue.png").write_bytes(b"not a png")  # decoded last

    with pytest.raises(HPAInputError, match=f"{ids[-1]}_blue.png"):
        ensure_cache(image_dir, ids, SIZE, num_workers=1)
    files = _files(data_root)
    assert not files.fingerprint.exists()  # the old cache no longer passes for this data
    assert not list(files.images.parent.glob("*.tmp"))


def test_a_data_root_without_a_writable_cache_folder_uses_cache_dir(
    data_root: Path, tmp_path: Path
):
    # As root, chmod does not stop writes; a file where ROOT/cache would go does.
    (data_root / "cache").write_text("in the way")
    ids = _ids(data_root)
    fallback = tmp_path / "caches"
    images = ensure_cache(data_root / "train", ids, SIZE, cache_dir=fallback)
    assert images.path.parent.parent == fallback
    assert images.path.parent.name.startswith("set-")
    np.testing.assert_array_equal(np.load(images.path), _decoded(data_root, ids))
    with pytest.raises(HPAInputError, match="cache_dir"):
        cache_folder(data_root / "train", cache_dir=None)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
def test_a_read_only_data_root_uses_cache_dir(data_root: Path, tmp_path: Path):
    data_root.chmod(0o555)
    try:
        folder = cache_folder(data_root / "train", cache_dir=tmp_path / "caches")
    finally:
        data_root.chmod(0o755)
    assert folder.parent == tmp_path / "caches"


def test_dataloader_workers_read_the_cache_not_the_files(data_root: Path):
    ids = _ids(data_root)
    images = ensure_cache(data_root / "train", ids, SIZE)
    expected = np.load(images.path)
    shutil.rmtree(data_root / "train")  # only the cache is left to read from
    dataset = RGBYDataset(data_root / "train", ids, None, SIZE, cache=images)
    # workers receive the path, not the images
    assert len(pickle.dumps(dataset)) < expected.nbytes / 10

    # torch's default collate, and ours, whose workers write batches into shared memory
    for collate_fn in (None, collate_samples):
        loader = DataLoader(dataset, batch_size=8, num_workers=2, collate_fn=collate_fn)
        batches = [batch["image"] for batch in loader]
        assert all(batch.shape == (8, 4, SIZE, SIZE) for batch in batches)
        if collate_fn is collate_samples:
            assert all(batch.is_contiguous(memory_format=torch.channels_last) for batch in batches)
        images_read = torch.cat(batches).permute(0, 2, 3, 1).numpy()
        np.testing.assert_array_equal(images_read, expected)


def test_a_cache_of_another_size_is_refused_by_the_dataset(data_root: Path):
    ids = _ids(data_root)
    images = ensure_cache(data_root / "train", ids, SIZE)
    with pytest.raises(ValueError, match="px"):
        RGBYDataset(data_root / "train", ids, None, SIZE + 1, cache=images)
    assert isinstance(images, PackedImages)


def _datamodule(root: Path, cache: bool) -> HPADataModule:
    augment = OmegaConf.to_container(OmegaConf.load(REPO / "conf/augment/basic.yaml"))
    config = {"root": root, "image_size": SIZE, "batch_size": 8, "num_workers": 0, "cache": cache}
    datamodule = HPADataModule.from_config(config, HPA2018, augment)
    datamodule.setup("fit")
    return datamodule


def test_the_datamodule_gives_the_same_batches_with_and_without_the_cache(data_root: Path):
    with_cache, without = _datamodule(data_root, True), _datamodule(data_root, False)
    assert with_cache.packed_images is not None and without.packed_images is None
    np.testing.assert_array_equal(with_cache.channel_mean, without.channel_mean)
    np.testing.assert_array_equal(with_cache.channel_std, without.channel_std)

    for name in ("train", "val", "test"):
        loaders = []
        for datamodule in (with_cache, without):
            torch.manual_seed(0)
            loaders.append(list(getattr(datamodule, f"{name}_dataloader")()))
        assert len(loaders[0]) == len(loaders[1]) > 0
        for cached, decoded in zip(*loaders, strict=True):
            assert cached.keys() == decoded.keys()
            for key in cached:
                torch.testing.assert_close(cached[key], decoded[key], rtol=0, atol=0)
