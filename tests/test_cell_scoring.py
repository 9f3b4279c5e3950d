"""Per-cell scores of the 2021 task: one-pass class activation maps and the cell-scoring methods,
on small untrained models and hand-made cells and maps whose answers are known."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from hpa.core.errors import HPAInputError
from hpa.core.labels import HPA2021
from hpa.evaluation.cell_map import CellMAP
from hpa.evaluation.cell_scoring import (
    CELL_METHODS,
    broadcast_scores,
    cam_scores,
    crops_scores,
    pooled_cell_evidence,
    score_cells,
)
from hpa.models.activation_maps import (
    activation_maps_and_logits,
    class_activation_maps,
    with_output_stride,
)
from hpa.models.module import HPAModule

NUM_CLASSES = HPA2021.num_classes
CLASS_A = 0  # Nucleoplasm
NEGATIVE_CLASS = HPA2021.class_names.index("Negative")


def module_of(name: str) -> HPAModule:
    # a non-trivial normalisation, so that maps computed without it would not match the logits
    return HPAModule(
        name=name,
        labels=HPA2021.to_dict(),
        channel_mean=(0.1, 0.2, 0.3, 0.4),
        channel_std=(0.2, 0.3, 0.25, 0.5),
    )


def random_images(batch: int = 2, size: int = 64) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (batch, 4, size, size), dtype=torch.uint8, generator=generator)


@pytest.mark.parametrize("name", ["resnet18", "densenet121", "efficientnet_b0"])
def test_cam_spatial_mean_is_the_logit_of_the_module(name):
    torch.manual_seed(0)
    module = module_of(name)
    module.train()  # the maps are computed in eval mode, and the mode is given back
    images = random_images()

    maps = class_activation_maps(module, images)

    assert module.training
    assert maps.shape == (2, NUM_CLASSES, 2, 2)  # 64 px / 32
    assert maps.dtype == torch.float32
    module.eval()
    with torch.no_grad():
        logits = module(images)
    torch.testing.assert_close(maps.mean(dim=(2, 3)), logits, rtol=1e-4, atol=1e-4)
    # the maps say where: they are not constant over the image
    assert maps.std(dim=(2, 3)).min() > 0
    torch.testing.assert_close(
        activation_maps_and_logits(module, images).logits, logits, rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_b0"])
def test_dilated_maps_are_finer_from_the_same_weights(name):
    torch.manual_seed(0)
    module = module_of(name)
    images = random_images(size=128)
    native = activation_maps_and_logits(module, images)

    dilated = with_output_stride(module, 8)

    assert with_output_stride(module, 32) is module
    assert dilated is not module and module.backbone.state_dict().keys() == (
        dilated.backbone.state_dict().keys()
    )
    for key, value in module.backbone.state_dict().items():
        torch.testing.assert_close(dilated.backbone.state_dict()[key], value)
    outputs = activation_maps_and_logits(dilated, images)
    assert native.maps.shape == (2, NUM_CLASSES, 4, 4)
    assert outputs.maps.shape == (2, NUM_CLASSES, 16, 16)
    # the dilated network is another function of the same weights, and the maps its own logits
    torch.testing.assert_close(outputs.maps.mean(dim=(2, 3)), outputs.logits, rtol=1e-4, atol=1e-4)
    # the module itself is untouched: its maps and logits are as before
    torch.testing.assert_close(activation_maps_and_logits(module, images).maps, native.maps)


def test_a_backbone_timm_cannot_dilate_is_refused_by_name():
    with pytest.raises(
        HPAInputError, match=r"densenet121 cannot make class maps at output stride 8"
    ):
        with_output_stride(module_of("densenet121"), 8)
    with pytest.raises(HPAInputError, match="must be 8, 16 or 32"):
        with_output_stride(module_of("resnet18"), 4)


@pytest.mark.parametrize("name", ["seed_cnn", "convnext_atto"])
def test_cam_refuses_a_head_that_is_not_gap_and_linear(name):
    # the seed CNN pools to 6 x 6 and mixes positions in an MLP; ConvNeXt normalises the pooled
    # features before its linear layer (which is an nn.Linear all the same)
    with pytest.raises(HPAInputError, match=rf"{name}.*cells=cam needs a GAP\+linear head"):
        class_activation_maps(module_of(name), random_images(batch=1))


def squares(shape: tuple[int, int], *boxes: tuple[int, int, int, int]) -> np.ndarray:
    """A label image with cell i + 1 = rows r0:r1, columns c0:c1 of ``boxes[i]``."""
    labels = np.zeros(shape, dtype=np.int32)
    for cell, (r0, r1, c0, c1) in enumerate(boxes, start=1):
        labels[r0:r1, c0:c1] = cell
    return labels


def image_probabilities(class_a: float = 0.9, negative: float = 0.3) -> np.ndarray:
    probabilities = np.full(NUM_CLASSES, 0.02)
    probabilities[CLASS_A] = class_a
    probabilities[NEGATIVE_CLASS] = negative
    return probabilities


def class_a_on_the_left(map_size: int = 8) -> np.ndarray:
    """Logit maps that are flat (0) for every class but A, which is +4 on the image's left half
    and -4 on its right half, and Negative, the other way round (what a trained model's maps
    say of an image whose right half shows nothing)."""
    maps = np.zeros((NUM_CLASSES, map_size, map_size), dtype=np.float32)
    maps[CLASS_A, :, : map_size // 2] = 4.0
    maps[CLASS_A, :, map_size // 2 :] = -4.0
    maps[NEGATIVE_CLASS] = -maps[CLASS_A]
    return maps


# cell 1 on the left half, cell 2 on the right half of a 64 px image
TWO_CELLS = squares((64, 64), (16, 48, 4, 28), (16, 48, 36, 60))


def test_broadcast_gives_every_cell_the_image_row():
    probabilities = image_probabilities()
    scores = broadcast_scores(probabilities, 3)
    assert scores.shape == (3, NUM_CLASSES)
    for row in scores:
        np.testing.assert_array_equal(row, probabilities)


def test_cam_puts_a_class_in_the_cell_that_shows_it_and_negative_in_the_other():
    probabilities = image_probabilities()
    scores = cam_scores(probabilities, 2, class_maps=class_a_on_the_left(), cells=TWO_CELLS)

    assert scores.shape == (2, NUM_CLASSES)
    assert ((scores >= 0) & (scores <= 1)).all()
    assert scores[0, CLASS_A] > scores[1, CLASS_A]
    assert scores[1, NEGATIVE_CLASS] > scores[0, NEGATIVE_CLASS]
    # score = p ** 0.8 * sigmoid(evidence) ** 0.2 at the default weight
    sigmoid_4 = 1 / (1 + np.exp(-4.0))
    assert scores[0, CLASS_A] == pytest.approx(0.9**0.8 * sigmoid_4**0.2)
    assert scores[1, CLASS_A] == pytest.approx(0.9**0.8 * (1 - sigmoid_4) ** 0.2)
    # flat maps: the cells of one image tie, each class keeps its order across images
    flat = slice(CLASS_A + 1, NEGATIVE_CLASS)
    np.testing.assert_allclose(
        scores[:, flat], np.tile(probabilities[flat] ** 0.8 * 0.5**0.2, (2, 1))
    )


def test_cam_with_weight_0_is_broadcast():
    probabilities = image_probabilities()
    scores = cam_scores(
        probabilities, 2, class_maps=class_a_on_the_left(), cells=TWO_CELLS, weight=0.0
    )
    np.testing.assert_allclose(scores, broadcast_scores(probabilities, 2))


def blobs_at_512() -> np.ndarray:
    """Eight discs and squares of different sizes on a 512 px label image."""
    labels = np.zeros((512, 512), dtype=np.int32)
    centres = [(60, 60), (60, 250), (60, 440), (250, 80), (250, 300), (440, 60), (430, 250)]
    for cell, (row, column) in enumerate(centres, start=1):
        cv2.circle(labels, (column, row), 20 + 7 * cell, cell, thickness=-1)
    labels[400:480, 380:500] = len(centres) + 1
    return labels


def test_cam_scores_hardly_depend_on_the_label_image_resolution():
    labels_512 = blobs_at_512()
    labels_2048 = cv2.resize(labels_512, (2048, 2048), interpolation=cv2.INTER_NEAREST)
    num_cells = int(labels_512.max())
    maps = np.random.default_rng(0).normal(0.0, 2.0, (NUM_CLASSES, 16, 16)).astype(np.float32)
    probabilities = np.random.default_rng(1).uniform(0.05, 0.95, NUM_CLASSES)

    # 1000 px: downsampled to 512 by a factor that is not an integer, so pixels shift
    labels_1000 = cv2.resize(labels_512, (1000, 1000), interpolation=cv2.INTER_NEAREST)

    at_512 = cam_scores(probabilities, num_cells, class_maps=maps, cells=labels_512)
    at_2048 = cam_scores(probabilities, num_cells, class_maps=maps, cells=labels_2048)
    at_1000 = cam_scores(probabilities, num_cells, class_maps=maps, cells=labels_1000)

    np.testing.assert_allclose(at_2048, at_512, atol=0.01)
    np.testing.assert_allclose(at_1000, at_512, atol=0.01)
    # and the cells do differ: the test would not pass by every row being the image's
    assert np.ptp(at_512, axis=0).max() > 0.1


def test_a_cell_of_a_few_pixels_at_2048_keeps_its_evidence():
    labels = np.zeros((2048, 2048), dtype=np.int32)
    labels[100:900, 100:900] = 1  # a large cell on the left, where A is strong
    labels[1200:1900, 1200:1900] = 2  # a large cell on the right, where A is weak
    labels[1024:1026, 401:403] = 3  # 2 x 2 pixels on the left: lost when downsampled 4 x
    maps = class_a_on_the_left()
    assert 3 not in cv2.resize(labels, (512, 512), interpolation=cv2.INTER_NEAREST_EXACT)

    evidence, present = pooled_cell_evidence(maps, labels, 3, working_size=512)

    assert present.all()
    assert evidence[2, CLASS_A] == pytest.approx(4.0)  # the map's value at the cell
    scores = cam_scores(image_probabilities(), 3, class_maps=maps, cells=labels)
    assert scores[2, CLASS_A] > scores[1, CLASS_A]
    assert scores[2, CLASS_A] == pytest.approx(scores[0, CLASS_A], rel=1e-3)


def test_cam_scores_a_higher_cell_map_than_broadcast_where_cells_differ():
    # two images, each with one cell of class A and one Negative cell, on opposite sides
    probabilities = image_probabilities(class_a=0.9, negative=0.4)
    left_a = class_a_on_the_left()
    right_a = left_a[:, :, ::-1].copy()
    images = [
        ("a_left", {1: {CLASS_A}, 2: {NEGATIVE_CLASS}}, left_a),
        ("a_right", {1: {NEGATIVE_CLASS}, 2: {CLASS_A}}, right_a),
    ]
    results = {}
    for method in ("broadcast", "cam"):
        metric = CellMAP()
        for image_id, truth, maps in images:
            scores = score_cells(method, probabilities, 2, cells=TWO_CELLS, class_maps=maps)
            metric.add_image(image_id, TWO_CELLS, truth, TWO_CELLS, scores)
        results[method] = metric.compute()

    # broadcast ties the two cells of each image: half its top predictions are wrong
    assert results["broadcast"]["ap"][CLASS_A] == pytest.approx(0.75)
    assert results["broadcast"]["map"] < 1.0
    assert results["cam"]["ap"][CLASS_A] == pytest.approx(1.0)
    assert results["cam"]["ap"][NEGATIVE_CLASS] == pytest.approx(1.0)
    assert results["cam"]["map"] > results["broadcast"]["map"]


def test_score_cells_dispatches_and_fails_fast_on_bad_names():
    probabilities = image_probabilities()
    maps = class_a_on_the_left()
    assert set(CELL_METHODS) == {"broadcast", "cam", "crops"}
    np.testing.assert_array_equal(
        score_cells("broadcast", probabilities, 2), broadcast_scores(probabilities, 2)
    )
    np.testing.assert_array_equal(
        score_cells("cam", probabilities, 2, cells=TWO_CELLS, class_maps=maps, weight=0.8),
        cam_scores(probabilities, 2, class_maps=maps, cells=TWO_CELLS, weight=0.8),
    )
    with pytest.raises(HPAInputError, match="'xyz'.*broadcast, cam, crops"):
        score_cells("xyz", probabilities, 2)
    with pytest.raises(HPAInputError, match="cells=cam needs class_maps"):
        score_cells("cam", probabilities, 2, cells=TWO_CELLS)
    with pytest.raises(HPAInputError, match="no option.*wieght.*weight"):
        score_cells("cam", probabilities, 2, cells=TWO_CELLS, class_maps=maps, wieght=0.3)
    with pytest.raises(HPAInputError, match="holds id 2, but there are 1 cells"):
        score_cells("cam", probabilities, 1, cells=TWO_CELLS, class_maps=maps)


def test_crops_scores_each_cell_by_its_own_probabilities_blended_with_the_image():
    image = image_probabilities()
    cells = np.zeros((2, NUM_CLASSES))
    cells[0, CLASS_A] = 0.9
    cells[1, NEGATIVE_CLASS] = 0.8
    own = score_cells("crops", image, 2, cell_probabilities=cells)
    np.testing.assert_allclose(own, cells)
    np.testing.assert_allclose(
        crops_scores(image, 2, cell_probabilities=cells, image_weight=1.0), [image, image]
    )
    half = crops_scores(image, 2, cell_probabilities=cells, image_weight=0.5)
    np.testing.assert_allclose(half, 0.5 * cells + 0.5 * image)
    with pytest.raises(HPAInputError, match="cells=crops needs cell_probabilities"):
        score_cells("crops", image, 2)
    with pytest.raises(HPAInputError, match=r"must be \(3, 19\)"):
        crops_scores(image, 3, cell_probabilities=cells)
    with pytest.raises(HPAInputError, match="image_weight must be in"):
        crops_scores(image, 2, cell_probabilities=cells, image_weight=1.5)
