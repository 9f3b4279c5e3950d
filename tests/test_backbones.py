from __future__ import annotations

import logging
from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch
from torch import nn

from hpa.core.errors import HPAInputError
from hpa.core.labels import HPA2018
from hpa.models.backbones import SeedCNN, create_backbone, widen_stem_conv

BACKBONE_NAMES = ["resnet18", "resnet50", "resnet152", "densenet121", "efficientnet_b0", "seed_cnn"]


def stem_conv(model: nn.Module) -> nn.Conv2d:
    if isinstance(model, SeedCNN):
        return model.features[0][0]
    return model.get_submodule(model.pretrained_cfg["first_conv"])


def save_random_rgb_weights(
    name: str, directory: Path, suffix: str = ".pth"
) -> tuple[Path, dict[str, torch.Tensor]]:
    """Save a randomly initialised 1000-class RGB timm model's state dict; return path and dict."""
    torch.manual_seed(0)
    source = timm.create_model(name, pretrained=False, num_classes=1000, in_chans=3)
    state_dict = {key: value.clone() for key, value in source.state_dict().items()}
    path = directory / f"{name}_rgb{suffix}"
    if suffix == ".safetensors":  # the format of timm's weights on the Hugging Face hub
        safetensors.torch.save_file(state_dict, path)
    else:
        torch.save(state_dict, path)
    return path, state_dict


@pytest.mark.parametrize("name", BACKBONE_NAMES)
def test_backbone_maps_rgby_images_to_logits(name: str) -> None:
    model = create_backbone(name, num_classes=HPA2018.num_classes).eval()

    assert stem_conv(model).in_channels == 4
    with torch.no_grad():
        for size in (64, 128):
            logits = model(torch.randn(2, 4, size, size))
            assert logits.shape == (2, HPA2018.num_classes)
            assert torch.isfinite(logits).all()


def test_backbone_trains_one_step() -> None:
    model = create_backbone("seed_cnn", num_classes=HPA2018.num_classes, drop_rate=0.25).train()
    logits = model(torch.randn(3, 4, 64, 64))
    logits.sum().backward()
    assert stem_conv(model).weight.grad is not None
    assert sum(isinstance(m, nn.Dropout) and m.p == 0.25 for m in model.modules()) == 6


def test_num_classes_and_drop_rate_reach_timm() -> None:
    model = create_backbone("resnet18", num_classes=5, drop_rate=0.3)
    assert model.get_classifier().out_features == 5
    assert model.drop_rate == 0.3


def test_unknown_name_lists_close_matches() -> None:
    with pytest.raises(ValueError, match="resnet50") as error:
        create_backbone("resnet5O", num_classes=HPA2018.num_classes)
    assert "Unknown backbone 'resnet5O'" in str(error.value)


def test_seed_cnn_has_no_pretrained_weights() -> None:
    with pytest.raises(ValueError, match="pretrained"):
        create_backbone("seed_cnn", num_classes=HPA2018.num_classes, pretrained=True)


@pytest.mark.parametrize(
    ("name", "suffix"),
    [
        ("resnet18", ".pth"),
        ("resnet18", ".safetensors"),
        ("efficientnet_b0", ".pth"),
        ("densenet121", ".safetensors"),
    ],
)
def test_pretrained_rgb_weights_are_widened_to_rgby(name: str, suffix: str, tmp_path: Path) -> None:
    path, saved = save_random_rgb_weights(name, tmp_path, suffix)

    model = create_backbone(
        name, num_classes=HPA2018.num_classes, pretrained=True, pretrained_path=str(path)
    )

    stem_name = model.pretrained_cfg["first_conv"]
    stem_weight = stem_conv(model).weight
    saved_stem = saved[f"{stem_name}.weight"]
    assert stem_weight.shape == (saved_stem.shape[0], 4, *saved_stem.shape[2:])
    assert torch.equal(stem_weight[:, :3], saved_stem)
    assert torch.equal(stem_weight[:, 3], saved_stem[:, 0])

    classifier = model.get_classifier()
    assert classifier.out_features == HPA2018.num_classes
    classifier_name = model.pretrained_cfg["classifier"]
    loaded = model.state_dict()
    other_keys = [
        key
        for key in saved
        if key != f"{stem_name}.weight" and not key.startswith(f"{classifier_name}.")
    ]
    assert other_keys
    for key in other_keys:
        assert torch.equal(loaded[key], saved[key]), key
    assert model.in_chans == 4


def test_widened_stem_sees_rgb_as_before_when_yellow_is_zero(tmp_path: Path) -> None:
    path, _ = save_random_rgb_weights("resnet18", tmp_path)
    rgb_model = create_backbone(
        "resnet18",
        num_classes=HPA2018.num_classes,
        in_chans=3,
        pretrained=True,
        pretrained_path=str(path),
    )
    rgby_model = create_backbone(
        "resnet18",
        num_classes=HPA2018.num_classes,
        in_chans=4,
        pretrained=True,
        pretrained_path=str(path),
    )
    rgby_model.fc.load_state_dict(rgb_model.fc.state_dict())
    rgb_images = torch.randn(2, 3, 64, 64)
    rgby_images = torch.cat([rgb_images, torch.zeros(2, 1, 64, 64)], dim=1)

    with torch.no_grad():
        rgb_logits = rgb_model.eval()(rgb_images)
        rgby_logits = rgby_model.eval()(rgby_images)

    assert stem_conv(rgb_model).in_channels == 3
    torch.testing.assert_close(rgby_logits, rgb_logits)


def test_widen_stem_conv_keeps_conv_settings() -> None:
    model = timm.create_model("efficientnet_b0", pretrained=False, in_chans=3)
    before = model.conv_stem
    settings = (before.stride, before.padding, before.dilation, before.groups, before.bias)
    rgb_weight = before.weight.detach().clone()

    widen_stem_conv(model, in_chans=5)

    after = model.conv_stem
    assert (after.stride, after.padding, after.dilation, after.groups, after.bias) == settings
    assert after.in_channels == 5
    assert torch.equal(after.weight[:, :3], rgb_weight)
    assert torch.equal(after.weight[:, 3], rgb_weight[:, 0])
    assert torch.equal(after.weight[:, 4], rgb_weight[:, 0])
    assert model(torch.randn(1, 5, 64, 64)).shape == (1, 1000)


def test_missing_pretrained_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        create_backbone(
            "resnet18",
            num_classes=HPA2018.num_classes,
            pretrained=True,
            pretrained_path=str(tmp_path / "missing.pth"),
        )


def test_checkpoint_with_foreign_keys_raises(tmp_path: Path) -> None:
    """A prefixed checkpoint would load nothing; timm only logs that, so we fail loudly."""
    path, saved = save_random_rgb_weights("resnet18", tmp_path)
    torch.save({f"model.{key}": value for key, value in saved.items()}, path)

    with pytest.raises(ValueError, match="none of the weights"):
        create_backbone(
            "resnet18", num_classes=HPA2018.num_classes, pretrained=True, pretrained_path=str(path)
        )


def test_a_checkpoint_missing_some_weights_is_refused_unless_partial_is_allowed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, saved = save_random_rgb_weights("resnet18", tmp_path)
    dropped = [key for key in saved if key.startswith("layer4.")]
    torch.save({key: value for key, value in saved.items() if key not in dropped}, path)
    settings = {
        "num_classes": HPA2018.num_classes,
        "pretrained": True,
        "pretrained_path": str(path),
    }

    with pytest.raises(HPAInputError, match=r"model.allow_partial_pretrained=true") as refused:
        create_backbone("resnet18", **settings)
    assert f"{len(dropped)} of" in str(refused.value) and "layer4." in str(refused.value)

    with caplog.at_level(logging.WARNING):
        model = create_backbone("resnet18", **settings, allow_partial_pretrained=True)
    assert "keep their random init" in caplog.text
    torch.testing.assert_close(
        model.state_dict()["layer1.0.conv1.weight"], saved["layer1.0.conv1.weight"]
    )
