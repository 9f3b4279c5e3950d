"""The augmentation pipeline's own parts: the OpenCV D4 and the channels-last batches."""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch
from albumentations.augmentations.geometric.flip import d4_group_elements
from albumentations.augmentations.geometric.functional import d4 as albumentations_d4
from omegaconf import OmegaConf

from hpa.core.labels import HPA2018
from hpa.data.dataset import RGBYDataset, collate_samples
from hpa.data.reader import read_labels_csv
from hpa.data.synthetic import generate_dataset
from hpa.data.transforms import D4, build_augmentation, interleave_channels

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("channels", [None, 1, 3, 4])
def test_our_d4_gives_albumentations_d4_for_every_element(channels):
    rng = np.random.default_rng(channels)
    shape = (5, 7) if channels is None else (5, 7, channels)  # not square: transposes show
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    transform = D4(p=1.0)
    for element in d4_group_elements:
        ours = transform.apply(image, group_element=element)
        theirs = np.ascontiguousarray(albumentations_d4(image, element))
        assert ours.shape == theirs.shape, element
        np.testing.assert_array_equal(ours, theirs, err_msg=element)
    with pytest.raises(ValueError, match="D4"):
        transform.apply(image, group_element="x")


def test_our_d4_draws_the_8_elements_uniformly_and_repeats_with_its_seed():
    image = np.arange(4 * 4 * 4, dtype=np.uint8).reshape(4, 4, 4)
    pipeline = A.Compose([D4(p=1.0)])
    results = []
    for _ in range(2):
        pipeline.set_random_seed(7)
        results.append([pipeline(image=image)["image"].tobytes() for _ in range(800)])
    assert results[0] == results[1]
    counts = np.unique(results[0], return_counts=True)[1]
    assert len(counts) == 8 and counts.min() > 60  # 100 expected for each of the 8


def test_interleave_channels_makes_hwc_and_keeps_an_interleaved_view():
    image = np.random.default_rng(0).integers(0, 256, (4, 6, 5), dtype=np.uint8)
    interleaved = interleave_channels(image)
    assert interleaved.flags.c_contiguous
    np.testing.assert_array_equal(interleaved, image.transpose(1, 2, 0))
    view = interleaved.transpose(2, 0, 1)
    assert np.shares_memory(interleave_channels(view), interleaved)  # not copied again
    np.testing.assert_array_equal(interleave_channels(image[:1]), image[:1].transpose(1, 2, 0))


def test_dataset_batches_are_channels_last_and_equal_the_items_stacked(tmp_path):
    root = generate_dataset(tmp_path / "set", 6, 32, 0, progress=False)
    ids, labels = read_labels_csv(root / "train.csv", HPA2018)
    dataset = RGBYDataset(root / "train", ids, labels, 32)

    batch = collate_samples(dataset.__getitems__([4, 1, 2]))
    items = [dataset[index] for index in (4, 1, 2)]
    assert batch["image"].shape == (3, 4, 32, 32) and batch["image"].dtype == torch.uint8
    assert batch["image"].is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(batch["image"], torch.stack([item["image"] for item in items]))
    torch.testing.assert_close(batch["target"], torch.from_numpy(labels[[4, 1, 2]]).float())
    assert batch["index"].tolist() == [4, 1, 2]
    # items from elsewhere (plain contiguous 4 x S x S images) are stacked the same way
    plain = [{**item, "image": item["image"].contiguous()} for item in items]
    stacked = collate_samples(plain)
    torch.testing.assert_close(stacked["image"], batch["image"])
    assert stacked["image"].is_contiguous(memory_format=torch.channels_last)
    # the unaugmented image, as decoded
    np.testing.assert_array_equal(items[0]["image"].numpy(), dataset.read_image(4))


def test_augmented_items_repeat_with_the_pipeline_seed(tmp_path):
    steps = OmegaConf.to_container(OmegaConf.load(REPO / "conf/augment/basic.yaml"))
    root = generate_dataset(tmp_path / "set", 4, 32, 0, progress=False)
    ids, labels = read_labels_csv(root / "train.csv", HPA2018)
    augmentation = build_augmentation(steps)
    dataset = RGBYDataset(root / "train", ids, labels, 32, augmentation)
    runs = []
    for _ in range(2):
        augmentation.set_random_seed(3)
        runs.append(collate_samples(dataset.__getitems__([0, 1, 2, 3]))["image"])
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)
    plain = collate_samples(RGBYDataset(root / "train", ids, labels, 32).__getitems__([0, 1, 2, 3]))
    assert not torch.equal(runs[0], plain["image"])
