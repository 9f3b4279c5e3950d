"""Training on crops (data.load_size): random crops for training, the centre crop for evaluation,
read from images resized (and cached) at the load size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from cli import run_module
from test_train import run_train

from hpa.core.errors import HPAInputError
from hpa.core.labels import HPA2018
from hpa.core.metric_names import TEST_F1_MACRO, TEST_LOSS
from hpa.data.datamodule import HPADataModule
from hpa.data.dataset import RGBYDataset
from hpa.data.synthetic import generate_dataset
from hpa.data.transforms import build_augmentation, evaluation_crop, image_crop
from hpa.evaluation.tta import center_crop, crop_windows, predict_with_tta
from hpa.models.checkpoints import load_module


def windows_of(image: np.ndarray, crop: np.ndarray) -> list[tuple[int, int]]:
    """(top, left) of every place ``crop`` (h x w x c) sits in ``image`` (H x W x c)."""
    size = crop.shape[0]
    span = image.shape[0] - size + 1
    return [
        (top, left)
        for top in range(span)
        for left in range(span)
        if np.array_equal(image[top : top + size, left : left + size], crop)
    ]


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (40, 40, 4), dtype=np.uint8)


def test_no_crop_without_a_larger_load_size():
    assert image_crop(32, None, random=True) is None
    assert image_crop(32, 32, random=False) is None
    assert evaluation_crop(32, None) is None


def test_a_load_size_smaller_than_the_image_size_is_refused():
    with pytest.raises(HPAInputError, match="load_size=24 is smaller than data.image_size=32"):
        image_crop(32, 24, random=True)
    with pytest.raises(HPAInputError, match="load_size"):
        HPADataModule.from_config({"root": "/nowhere", "image_size": 32, "load_size": 24}, HPA2018)


def test_the_evaluation_crop_is_the_centre_window_the_tta_crops_start_with(image):
    crop = evaluation_crop(32, 40)(image=image)["image"]
    top, left = crop_windows(40, 40, 32)[0]
    assert (top, left) == (4, 4)
    np.testing.assert_array_equal(crop, image[4:36, 4:36])
    # the torch centre crop of the TTA takes the same window
    batch = torch.from_numpy(image).permute(2, 0, 1)[None]
    np.testing.assert_array_equal(center_crop(batch, 32)[0].permute(1, 2, 0).numpy(), crop)
    # an odd margin: albumentations and the TTA both round the offset down
    odd = image[:39, :39]
    assert windows_of(odd, evaluation_crop(32, 39)(image=odd)["image"]) == [(3, 3)]
    assert crop_windows(39, 39, 32)[0] == (3, 3)


def test_random_crops_are_windows_of_the_image_at_many_places_and_repeat_with_the_seed(image):
    pipeline = build_augmentation(None, crop=image_crop(32, 40, random=True))
    pipeline.set_random_seed(7)
    crops = [pipeline(image=image)["image"] for _ in range(30)]
    places = set()
    for crop in crops:
        assert crop.shape == (32, 32, 4)
        found = windows_of(image, crop)
        assert len(found) == 1  # a random image has its windows all different
        places.update(found)
    assert all(0 <= top <= 8 and 0 <= left <= 8 for top, left in places)
    assert len(places) > 10
    pipeline.set_random_seed(7)
    np.testing.assert_array_equal(pipeline(image=image)["image"], crops[0])


def test_the_crop_comes_before_the_configured_augmentation(image):
    steps = {"dihedral": {"_target_": "hpa.data.transforms.D4", "p": 1.0}}
    pipeline = build_augmentation(steps, crop=image_crop(32, 40, random=True))
    assert type(pipeline.transforms[0]).__name__ == "RandomCrop"
    assert pipeline(image=image)["image"].shape == (32, 32, 4)


def test_a_dataset_read_larger_needs_a_crop(tmp_path: Path):
    with pytest.raises(ValueError, match="cropping them to 32"):
        RGBYDataset(tmp_path, np.array(["a"]), None, 32, load_size=40)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("crops") / "set"
    generate_dataset(root, num_images=30, image_size=48, seed=1, progress=False)
    return root


def crop_datamodule(root: Path, **kwargs) -> HPADataModule:
    config = {
        "root": root,
        "image_size": 24,
        "load_size": 40,
        "batch_size": 4,
        "num_workers": 0,
        "duplicates": {"enabled": False},
        "normalize": {"num_images": 4},
        **kwargs,
    }
    datamodule = HPADataModule.from_config(config, HPA2018)
    datamodule.setup("fit")
    return datamodule


@pytest.mark.parametrize("cache", [False, True])
def test_datamodule_crops_train_at_random_and_evaluation_at_the_centre(small_set, cache):
    datamodule = crop_datamodule(small_set, cache=cache)
    if cache:  # the cache holds the images at the load size
        assert datamodule.packed_images.image_size == 40
        assert datamodule.packed_images.path.name == "train-s40.npy"
    for name in ("train", "val", "test"):
        dataset = datamodule.datasets[name]
        assert dataset.load_size == 40 and dataset.image_size == 24
        item = dataset[0]
        assert item["image"].shape == (4, 24, 24)
        whole = dataset.read_image(0).transpose(1, 2, 0)  # uncropped, at the load size
        assert whole.shape == (40, 40, 4)
        place = windows_of(whole, item["image"].permute(1, 2, 0).numpy())
        assert place and (name == "train" or place == [(8, 8)])
    # a batch of the train loader is a batch of crops
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["image"].shape == (4, 4, 24, 24)


# a short run on 64 px crops of the images read at 80 px, with a test folder to predict
CROP_RUN = ("data.synthetic.num_test=6", "debug=fast", "model=cnn", "data.load_size=80",
            "trainer.limit_test_batches=1.0")  # fmt: skip


@pytest.mark.slow
def test_a_run_on_crops_is_evaluated_and_predicted_with_dihedral_crops(tmp_path: Path):
    run = tmp_path / "run"
    run_train(tmp_path, *CROP_RUN)
    checkpoint = run / "checkpoints" / "best.ckpt"
    run_metrics = json.loads((run / "metrics.json").read_text())

    # eval without TTA sees the centre crops the run tested on: the same metrics
    plain = run_module("hpa.eval", f"ckpt_path={checkpoint}", f"hydra.run.dir={tmp_path / 'e'}")
    assert plain.returncode == 0, plain.stderr[-3000:]
    evaluated = json.loads((tmp_path / "e" / "metrics.json").read_text())
    for name in (TEST_F1_MACRO, TEST_LOSS):
        assert evaluated[name] == pytest.approx(run_metrics[name], abs=1e-6)

    # dihedral_crops: the maximum over the 8 symmetries of 5 crops of the whole 80 px images
    crops = run_module(
        "hpa.eval",
        f"ckpt_path={checkpoint}",
        f"hydra.run.dir={tmp_path / 'c'}",
        "tta=dihedral_crops",
        "tta_reduce=max",
    )
    assert crops.returncode == 0, crops.stderr[-3000:]
    with_crops = json.loads((tmp_path / "c" / "metrics.json").read_text())
    assert with_crops[TEST_LOSS] == pytest.approx(run_metrics[TEST_LOSS], abs=1e-6)  # centre
    predictions = pd.read_csv(tmp_path / "c" / "test_predictions.csv", dtype={"Id": str})
    data_root = next((tmp_path / "data").glob("synthetic-*"))
    ids = predictions["Id"].to_numpy()[:3]
    whole = RGBYDataset(data_root / "train", ids, None, image_size=80)
    images = torch.stack([whole[i]["image"] for i in range(len(ids))])
    model = load_module(checkpoint).eval()
    with torch.no_grad():
        expected = predict_with_tta(
            lambda x: torch.sigmoid(model(x)), images, "dihedral_crops", "max", crop_size=64
        )
    written = predictions[list(HPA2018.class_names)].to_numpy()[:3]
    np.testing.assert_allclose(written, expected.numpy(), atol=1e-5)

    # predict: the test folder read at the run's load size, the same crops
    predicted = run_module(
        "hpa.predict",
        f"ckpt_path={checkpoint}",
        f"data.root={data_root}",
        f"hydra.run.dir={tmp_path / 'p'}",
        "tta=dihedral_crops",
    )
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    probabilities = pd.read_csv(tmp_path / "p" / "probabilities.csv", dtype={"Id": str})
    assert len(probabilities) == 6
    test_images = RGBYDataset(data_root / "test", probabilities["Id"].to_numpy()[:2], None, 80)
    batch = torch.stack([test_images[i]["image"] for i in range(2)])
    with torch.no_grad():
        expected = predict_with_tta(
            lambda x: torch.sigmoid(model(x)), batch, "dihedral_crops", "mean", crop_size=64
        )
    np.testing.assert_allclose(
        probabilities[list(HPA2018.class_names)].to_numpy()[:2], expected.numpy(), atol=1e-5
    )
