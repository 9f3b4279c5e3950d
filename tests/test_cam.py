"""Class activation maps of HPAModules with the grad-cam library (hpa.integrations.cam)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from pytorch_grad_cam.ablation_layer import AblationLayer
from real_samples import real_rgby_samples

from hpa.core.errors import HPAInputError
from hpa.core.labels import HPA2018
from hpa.integrations.cam import (
    CAM_METHODS,
    class_activation_maps,
    class_probabilities,
    draw_explanation,
    explain_images,
    heat_map_overlay,
    target_layer_name,
)
from hpa.models.module import HPAModule
from hpa.plots.figures import save_figure

FAMILY_LAYERS = {
    "resnet18": "layer4",
    "densenet121": "features.norm5",
    "efficientnet_b0": "bn2",
    "convnext_atto": "stages.3",
    "seed_cnn": "features.3",
}
CLASS_IDS = np.array([[0, 25], [7, 0]])  # two classes for each of two images
SIZE = 64  # resnet18's layer4 is then 2 x 2, the seed CNN's last block 4 x 4


def random_module(name: str) -> HPAModule:
    torch.manual_seed(0)
    return HPAModule(name, channels_last=name != "seed_cnn")


@pytest.fixture(scope="module")
def real_images(real_channels_dir) -> np.ndarray:
    return real_rgby_samples(real_channels_dir, count=2, size=SIZE)


def layer_output(module: HPAModule, layer: str, images: torch.Tensor) -> torch.Tensor:
    outputs = []
    hook = module.backbone.get_submodule(layer).register_forward_hook(
        lambda _, __, output: outputs.append(output)
    )
    try:
        with torch.inference_mode():
            module(images)
    finally:
        hook.remove()
    return outputs[0]


@pytest.mark.parametrize(("name", "layer"), FAMILY_LAYERS.items())
def test_target_layer_is_the_last_feature_map_of_each_family(name, layer):
    module = random_module(name).eval()
    assert target_layer_name(module) == layer
    features = layer_output(module, layer, torch.zeros(1, 4, SIZE, SIZE, dtype=torch.uint8))
    # the map the classifier pools: all of its features, still spatial
    backbone = module.backbone
    num_features = getattr(backbone, "num_features", None) or backbone.conv_channels[-1]
    assert features.shape[:2] == (1, num_features)
    assert features.shape[-1] == features.shape[-2] >= 2


def test_an_unknown_family_names_the_model_and_takes_an_explicit_layer():
    module = random_module("mobilenetv3_small_050")  # timm MobileNetV3: not in TARGET_LAYERS
    with pytest.raises(HPAInputError, match="'mobilenetv3_small_050'.*name one of its layers"):
        target_layer_name(module)
    assert target_layer_name(module, "conv_head") == "conv_head"
    with pytest.raises(HPAInputError, match="'mobilenetv3_small_050' has no layer 'layer9'"):
        target_layer_name(module, "layer9")


def test_an_unknown_method_lists_the_known_ones(real_images):
    with pytest.raises(HPAInputError, match="'LRP'.*GradCAM, GradCAMPlusPlus, AblationCAM"):
        class_activation_maps(random_module("seed_cnn"), real_images, CLASS_IDS, "LRP")


@pytest.mark.parametrize(
    ("name", "method"),
    [
        ("seed_cnn", "GradCAM"),
        ("seed_cnn", "GradCAM++"),
        ("seed_cnn", "AblationCAM"),
        ("resnet18", "GradCAM"),
        ("resnet18", "gradcam++"),
    ],
)
def test_maps_per_class_in_zero_one_with_the_class_probabilities(name, method, real_images):
    module = random_module(name).train()
    maps, probabilities = class_activation_maps(module, real_images, CLASS_IDS, method)

    assert maps.shape == (2, 2, SIZE, SIZE) and maps.dtype == np.float32
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    # each map is scaled to its own maximum; all zeros where nothing speaks for the class
    peaks = maps.reshape(4, -1).max(axis=1)
    assert np.all((peaks == 0) | (peaks > 0.99)) and peaks.max() > 0.99
    # two classes of one image get different maps (a class-agnostic method such as EigenCAM
    # gives the same one); random weights make them differ little with GradCAM++ on resnet18
    assert np.abs(maps[:, 0] - maps[:, 1]).max(axis=(1, 2)).min() > 0.02

    module.eval()
    with torch.inference_mode():
        expected = torch.sigmoid(module(torch.from_numpy(real_images))).numpy()
    np.testing.assert_allclose(probabilities, expected[[[0], [1]], CLASS_IDS], atol=1e-5)


def test_the_callers_module_is_left_as_it_was(real_images):
    module = random_module("seed_cnn").train()
    layer = module.backbone.features[3]
    before = {key: value.clone() for key, value in module.state_dict().items()}
    class_activation_maps(module, real_images, CLASS_IDS, "AblationCAM")
    assert module.training
    assert module.backbone.features[3] is layer  # AblationCAM swaps it out while it runs
    assert not any(isinstance(m, AblationLayer) for m in module.modules())
    for key, value in module.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_bad_class_ids_are_refused(real_images):
    module = random_module("seed_cnn")
    with pytest.raises(ValueError, match="class_ids must be integers in 0..27"):
        class_activation_maps(module, real_images, [[0], [28]])
    with pytest.raises(ValueError, match=r"class_ids must be \(B=2, K\)"):
        class_activation_maps(module, real_images, [0, 1])


def test_every_method_name_is_a_grad_cam_class():
    assert {cls.__name__ for cls in CAM_METHODS.values()} == {
        "GradCAM",
        "GradCAMPlusPlus",
        "AblationCAM",
    }


def test_overlay_colours_hot_and_cold_places_differently():
    picture = np.full((2, 2, 3), 100, dtype=np.uint8)
    heat_map = np.array([[0.0, 1.0], [0.0, 1.0]])
    overlay = heat_map_overlay(picture, heat_map)
    assert overlay.shape == (2, 2, 3) and overlay.dtype == np.uint8
    assert overlay[0, 0, 2] > overlay[0, 0, 0]  # cold: blue
    assert overlay[0, 1, 0] > overlay[0, 1, 2]  # hot: red
    np.testing.assert_array_equal(overlay[0], overlay[1])


def test_panel_shows_composite_green_and_one_map_per_class(real_images, tmp_path):
    maps = np.random.default_rng(0).random((2, SIZE, SIZE))
    figure = draw_explanation(
        HPA2018, real_images[0], maps, [0, 25], [0.91, 0.07], title="sample 0"
    )
    titles = [axis.get_title() for axis in figure.axes]
    assert titles == [
        "RGBY composite",
        "green (protein)",
        f"{HPA2018.class_names[0]}\np = 0.91",
        f"{HPA2018.class_names[25]}\np = 0.07",
    ]

    path = tmp_path / "explanations" / "sample0.png"
    save_figure(draw_explanation(HPA2018, real_images[0], maps, [0, 25], [0.91, 0.07]), path)
    picture = cv2.imread(str(path))
    assert picture is not None and picture.shape[1] > picture.shape[0] * 3
    assert [p.name for p in path.parent.iterdir()] == ["sample0.png"]  # written atomically


def test_panel_refuses_maps_that_do_not_match_the_classes(real_images):
    with pytest.raises(ValueError, match="expected K maps"):
        draw_explanation(HPA2018, real_images[0], np.zeros((2, SIZE, SIZE)), [0], [0.5])


def test_a_torch_batch_gives_the_maps_of_the_numpy_batch(real_images):
    module = random_module("seed_cnn")
    from_numpy = class_activation_maps(module, real_images, CLASS_IDS)
    from_torch = class_activation_maps(module, torch.from_numpy(real_images), CLASS_IDS)
    for numpy_result, torch_result in zip(from_numpy, from_torch, strict=True):
        np.testing.assert_array_equal(numpy_result, torch_result)


def test_panel_wraps_into_rows_and_names_an_empty_map(real_images):
    maps = np.zeros((5, SIZE, SIZE))
    maps[0, :10, :10] = 1.0
    figure = draw_explanation(HPA2018, real_images[0], maps, [0, 1, 2, 3, 4], [0.9] * 5, columns=3)
    assert len(figure.axes) == 9  # 7 pictures in 3 rows of 3, the last two axes blank
    titles = [axis.get_title() for axis in figure.axes]
    assert titles[2] == f"{HPA2018.class_names[0]}\np = 0.90"
    assert titles[3] == f"{HPA2018.class_names[1]}\np = 0.90 (empty map)"
    assert titles[7:] == ["", ""]


def test_maps_of_images_with_class_lists_of_their_own(real_images):
    module = random_module("seed_cnn")
    explanations = explain_images(module, real_images, [[0, 25], [7]])
    assert [e.class_ids.tolist() for e in explanations] == [[0, 25], [7]]
    assert explanations[0].maps.shape == (2, SIZE, SIZE) and explanations[1].maps.shape == (
        1,
        SIZE,
        SIZE,
    )
    together, _ = class_activation_maps(module, real_images[:1], [[0, 25]])
    np.testing.assert_array_equal(explanations[0].maps, together[0])
    probabilities = class_probabilities(module, real_images)
    np.testing.assert_allclose(explanations[1].probabilities, probabilities[1, [7]], atol=1e-6)
