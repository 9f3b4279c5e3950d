"""Sanity checks of the class activation maps on synthetic images whose generator knows where each
class's motif is: the model-randomisation test of "Sanity Checks for Saliency Maps" (Adebayo et
al., 2018), and maps that differ between the classes of one image.

The model: resnet18, trained here with a real Lightning Trainer on 64 px synthetic images of two
frequent classes whose motifs lie in different compartments (Nucleoplasm: the nucleus; Cytosol:
the cytoplasm), one or both per image. The randomised model: the same module with every backbone
layer re-initialised (its channel statistics kept).

The images the maps are measured on are composites: the left half of an image of one class beside
the right half of an image of the other, so that each class's motif lies in one half only. At 64 px
resnet18's last feature map (layer4, the default target layer) is 2 x 2 cells: it can tell the two
halves apart, not the nucleus from the cytoplasm around it inside one cell. A class's map "falls
inside its motif's compartment" when its mean over that compartment in the half holding the motif
is above its mean over the same compartment in the other half: the same kind of pixels, without
the motif. A map blind to the class scores about half of the time.

Measured (2026-11-30, 2 shared CPU cores, the settings below; training seeds 0 / 1 / 2): the
trained model's maps fall in their motif's compartment for 0.93 / 0.85 / 0.80 of the 100 maps
(50 composites), the three randomisations' for 0.50, 0.48 and 0.25 (chance: 0.5); the two maps
of a composite correlate at -0.73 / -0.56 / -0.45 and differ by 0.53 / 0.50 / 0.45 on average
(maps in [0, 1]). About 45 s in all, training 26 s. The thresholds below leave a margin of at
least 0.1 to each of these.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from hpa.core.labels import HPA2018
from hpa.data.synthetic import COMPARTMENTS, MOTIF_COMPARTMENTS, render_sample_with_compartments
from hpa.integrations.cam import class_activation_maps
from hpa.models.module import HPAModule

CLASSES = ("Nucleoplasm", "Cytosol")
CLASS_IDS = [HPA2018.class_names.index(name) for name in CLASSES]
SIZE = 64
NUM_TRAIN_IMAGES = 256
EPOCHS = 4
NUM_COMPOSITES = 60  # drawn; kept when both halves hold cells (50 of them)
RANDOM_SEEDS = (1, 2, 3)


def one_hot(class_ids) -> np.ndarray:
    row = np.zeros(HPA2018.num_classes, np.uint8)
    row[list(class_ids)] = 1
    return row


def training_set(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    labels = np.stack(
        [
            one_hot(rng.choice(CLASS_IDS, rng.integers(1, len(CLASS_IDS) + 1), replace=False))
            for _ in range(NUM_TRAIN_IMAGES)
        ]
    )
    images = np.stack([render_sample_with_compartments(row, SIZE, rng)[0] for row in labels])
    return images, labels


def composites(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """(images, (N, 2) class ids, per image {class id: (motif region, same compartment in the
    other half)}): the halves of two one-class images side by side, in random order."""
    left = np.arange(SIZE)[None, :] < SIZE // 2
    images, pairs, regions = [], [], []
    for _ in range(NUM_COMPOSITES):
        first, second = rng.permutation(CLASS_IDS)
        image_a, masks_a = render_sample_with_compartments(one_hot([first]), SIZE, rng)
        image_b, masks_b = render_sample_with_compartments(one_hot([second]), SIZE, rng)
        side_a = left if rng.random() < 0.5 else ~left
        region = {}
        for class_id, own, other, side in (
            (first, masks_a, masks_b, side_a),
            (second, masks_b, masks_a, ~side_a),
        ):
            compartment = MOTIF_COMPARTMENTS[HPA2018.class_names[class_id]]
            region[class_id] = (own[compartment] & side, other[compartment] & ~side)
        if all(mask.any() for pair in region.values() for mask in pair):  # cells in both halves
            images.append(np.where(side_a[None], image_a, image_b))
            pairs.append((first, second))
            regions.append(region)
    return np.stack(images), np.array(pairs), regions


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Train and compute the maps on one thread: on the shared 2-core machine torch's two
    threads wait for each other, a training step of this model took 3-7 times as long with two
    (0.43 s against 1.3-3 s at a load of 6); the setting is restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained() -> HPAModule:
    rng = np.random.default_rng(0)
    images, labels = training_set(rng)
    scaled = images / 255.0
    torch.manual_seed(0)
    module = HPAModule(
        "resnet18",
        channels_last=True,
        channel_mean=scaled.mean(axis=(0, 2, 3)).tolist(),
        channel_std=scaled.std(axis=(0, 2, 3)).tolist(),
        optimizer={"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 3e-3},
    )
    trainer = pl.Trainer(
        max_epochs=EPOCHS,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    samples = [  # items shaped as RGBYDataset's; a list is a map-style dataset
        {"image": torch.from_numpy(image), "target": torch.from_numpy(label).float(), "index": i}
        for i, (image, label) in enumerate(zip(images, labels, strict=True))
    ]
    loader = DataLoader(samples, batch_size=16, shuffle=True)
    trainer.fit(module, loader)
    return module.eval()


@pytest.fixture(scope="module")
def test_images() -> tuple[np.ndarray, np.ndarray, list[dict]]:
    images, pairs, regions = composites(np.random.default_rng(1))
    assert len(images) >= 40
    return images, pairs, regions


def randomised(module: HPAModule, seed: int) -> HPAModule:
    """The module with every layer of its backbone re-initialised (Adebayo et al.'s full model
    randomisation); the channel statistics and thresholds are kept."""
    copied = copy.deepcopy(module)
    torch.manual_seed(seed)
    for layer in copied.backbone.modules():
        if layer is not copied.backbone and hasattr(layer, "reset_parameters"):
            layer.reset_parameters()
    return copied.eval()


def motif_hit_rate(module: HPAModule, test_images) -> float:
    """The fraction of maps (two per composite) whose mean is higher over the motif's compartment
    in the half holding the motif than over the same compartment in the other half."""
    images, pairs, regions = test_images
    maps, _ = class_activation_maps(module, images, pairs, "GradCAM")
    hits = [
        maps[index, k][with_motif].mean() > maps[index, k][without_motif].mean()
        for index in range(len(images))
        for k, class_id in enumerate(pairs[index])
        for with_motif, without_motif in [regions[index][class_id]]
    ]
    return float(np.mean(hits))


def test_the_compartments_of_the_classes_are_named_by_the_generator():
    for name in CLASSES:
        assert MOTIF_COMPARTMENTS[name] in COMPARTMENTS
    assert len({MOTIF_COMPARTMENTS[name] for name in CLASSES}) == len(CLASSES)


def test_trained_maps_fall_in_the_motif_compartment_randomised_ones_do_not(trained, test_images):
    trained_rate = motif_hit_rate(trained, test_images)
    random_rates = [motif_hit_rate(randomised(trained, seed), test_images) for seed in RANDOM_SEEDS]
    print(f"motif hit rate: trained {trained_rate:.2f}, randomised {np.round(random_rates, 2)}")
    assert trained_rate >= 0.7
    assert max(random_rates) <= 0.65  # 3 standard deviations above chance for 100 maps
    assert trained_rate - np.mean(random_rates) >= 0.25


def test_the_maps_of_two_classes_of_one_image_differ(trained, test_images):
    images, pairs, _ = test_images
    maps, _ = class_activation_maps(trained, images, pairs, "GradCAM")
    differences = np.abs(maps[:, 0] - maps[:, 1]).mean(axis=(1, 2))
    # a map that is all zeros (nothing speaks for the class) has no correlation: left out
    varying = (maps.std(axis=(2, 3)) > 0).all(axis=1)
    correlations = [np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in maps[varying]]
    print(
        f"two classes: mean correlation {np.mean(correlations):.2f} over {varying.sum()} images, "
        f"mean |difference| {differences.mean():.2f} over {len(maps)}"
    )
    assert np.mean(correlations) <= -0.2
    assert differences.mean() >= 0.3
