"""Test-time augmentation over flips and the dihedral group, on real torch models."""

from __future__ import annotations

import pytest
import timm
import torch
from test_losses import cpu_trainer, tiny_loader
from torch import nn

from hpa.core.errors import HPAInputError
from hpa.core.labels import HPA2018
from hpa.core.metric_names import TEST_LOSS
from hpa.evaluation.tta import (
    CROP_POSITIONS,
    TTA_MODES,
    TTAInput,
    check_tta_options,
    crop_windows,
    predict_with_tta,
    tta_input,
    tta_transforms,
)
from hpa.models.module import HPAModule


class InvariantModel(nn.Module):
    """Pointwise conv + ReLU, global average pool, linear, sigmoid: exactly symmetry-invariant."""

    def __init__(self, channels: int = 4, hidden: int = 16) -> None:
        super().__init__()
        self.pointwise = nn.Conv2d(channels, hidden, kernel_size=1)
        self.head = nn.Linear(hidden, HPA2018.num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = torch.relu(self.pointwise(images.float())).mean(dim=(-2, -1))
        return torch.sigmoid(self.head(features))


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(
        "resnet18", pretrained=False, num_classes=HPA2018.num_classes, in_chans=4
    )
    return model.eval()


def _probabilities(model: nn.Module):
    def model_fn(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.sigmoid(model(images))

    return model_fn


def _probabilities_direct(model: nn.Module):
    def model_fn(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(images)

    return model_fn


def _explicit_symmetries(model_fn, images: torch.Tensor) -> list[torch.Tensor]:
    """The model's outputs on the 8 symmetries of ``images``, written out: rot90 k=0..3 of the
    image and of its horizontal flip."""
    outputs = []
    for k in range(4):
        for flip in (False, True):
            transformed = images.flip(-1) if flip else images
            outputs.append(model_fn(torch.rot90(transformed, k, dims=(-2, -1))))
    return outputs


def test_transform_counts_and_identity_first():
    assert TTA_MODES == ("none", "flips", "dihedral")
    assert [len(tta_transforms(mode)) for mode in TTA_MODES] == [1, 4, 8]
    images = torch.rand(2, 4, 8, 8)
    for mode in TTA_MODES:
        assert torch.equal(tta_transforms(mode)[0](images), images)


def test_flips_are_the_four_flips():
    images = torch.rand(2, 4, 6, 6)
    expected = [
        images,
        images.flip(-1),
        images.flip(-2),
        images.flip(-1).flip(-2),
    ]
    for transform, target in zip(tta_transforms("flips"), expected, strict=True):
        assert torch.equal(transform(images), target)


def test_dihedral_transforms_are_eight_distinct_symmetries():
    torch.manual_seed(1)
    images = torch.rand(1, 4, 7, 7)
    outputs = [transform(images) for transform in tta_transforms("dihedral")]
    for i in range(8):
        assert outputs[i].shape == images.shape
        for j in range(i + 1, 8):
            assert not torch.equal(outputs[i], outputs[j]), (i, j)
    # A group: each transform permutes pixels, so all 8 are permutations of the same multiset.
    for output in outputs:
        assert torch.equal(output.flatten().sort().values, images.flatten().sort().values)
    # The flips are in the group (hflip = k0 flip, vflip = k2 flip, both = k2).
    flattened = [output.flatten() for output in outputs]
    for flip in tta_transforms("flips"):
        assert sum(torch.equal(flip(images).flatten(), o) for o in flattened) == 1


def test_dihedral_tta_of_an_invariant_model_equals_the_plain_output():
    torch.manual_seed(2)
    model = InvariantModel().eval()
    images = torch.randint(0, 256, (3, 4, 16, 16), dtype=torch.uint8)
    model_fn = _probabilities_direct(model)
    plain = model_fn(images)
    for mode in TTA_MODES:
        for reduce in ("mean", "max"):
            tta = predict_with_tta(model_fn, images, mode=mode, reduce=reduce)
            assert tta.shape == (3, HPA2018.num_classes)
            torch.testing.assert_close(tta, plain, rtol=1e-5, atol=1e-6)


def test_dihedral_mean_and_max_match_the_explicit_transforms(resnet):
    torch.manual_seed(3)
    images = torch.rand(2, 4, 32, 32)
    model_fn = _probabilities(resnet)
    stacked = torch.stack(_explicit_symmetries(model_fn, images))
    assert stacked.shape == (8, 2, HPA2018.num_classes)
    # The random resnet is not invariant, so TTA must actually change the prediction.
    assert not torch.allclose(stacked[0], stacked[1], atol=1e-4)
    mean = predict_with_tta(model_fn, images, mode="dihedral", reduce="mean")
    maximum = predict_with_tta(model_fn, images, mode="dihedral", reduce="max")
    torch.testing.assert_close(mean, stacked.mean(dim=0))
    torch.testing.assert_close(maximum, stacked.amax(dim=0))
    assert torch.all(maximum >= mean)
    torch.testing.assert_close(predict_with_tta(model_fn, images), stacked[0])


def test_flips_mean_matches_the_explicit_flips(resnet):
    torch.manual_seed(4)
    images = torch.rand(2, 4, 32, 32)
    model_fn = _probabilities(resnet)
    flipped = [images, images.flip(-1), images.flip(-2), images.flip(-2, -1)]
    expected = torch.stack([model_fn(x) for x in flipped]).mean(dim=0)
    torch.testing.assert_close(predict_with_tta(model_fn, images, mode="flips"), expected)


def test_unknown_mode_or_reduce_raises_before_calling_the_model():
    calls = []

    def model_fn(images: torch.Tensor) -> torch.Tensor:
        calls.append(images)
        return torch.zeros(images.shape[0], HPA2018.num_classes)

    images = torch.rand(1, 4, 8, 8)
    with pytest.raises(ValueError, match="mode"):
        predict_with_tta(model_fn, images, mode="rot45")
    with pytest.raises(ValueError, match="reduce"):
        predict_with_tta(model_fn, images, mode="flips", reduce="median")
    with pytest.raises(ValueError, match="mode"):
        tta_transforms("Flips")
    assert calls == []


def test_crop_windows_are_the_centre_then_the_four_corners():
    assert CROP_POSITIONS == ("center", "top_left", "top_right", "bottom_left", "bottom_right")
    assert crop_windows(40, 40, 32) == [(4, 4), (0, 0), (0, 8), (8, 0), (8, 8)]
    assert crop_windows(10, 12, 4) == [(3, 4), (0, 0), (0, 8), (6, 0), (6, 8)]
    # an image of the crop size has one window; one pixel larger, the centre is a corner
    assert crop_windows(32, 32, 32) == [(0, 0)]
    assert crop_windows(33, 33, 32) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    with pytest.raises(ValueError, match="32 px crops of 24 x 40"):
        crop_windows(24, 40, 32)


class PositionalModel(nn.Module):
    """A 3x3 conv then a linear layer over every position: far from symmetry-invariant, and fast
    (for the 40 copies of dihedral_crops)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 2, kernel_size=3, padding=1)
        self.head = nn.Linear(2 * size * size, HPA2018.num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(images.float())).flatten(1))


def test_dihedral_crops_reduce_the_eight_symmetries_of_each_crop():
    torch.manual_seed(5)
    images = torch.rand(2, 4, 20, 20)
    model_fn = _probabilities(PositionalModel(16))
    explicit = []
    for top, left in [(2, 2), (0, 0), (0, 4), (4, 0), (4, 4)]:
        crop = images[..., top : top + 16, left : left + 16]
        explicit.extend(_explicit_symmetries(model_fn, crop))
    stacked = torch.stack(explicit)
    assert stacked.shape == (40, 2, HPA2018.num_classes)
    for reduce, expected in (("mean", stacked.mean(dim=0)), ("max", stacked.amax(dim=0))):
        tta = predict_with_tta(model_fn, images, "dihedral_crops", reduce, crop_size=16)
        torch.testing.assert_close(tta, expected)
        # the crops of the whole image are not the symmetries of its centre crop alone
        centre = predict_with_tta(model_fn, images[..., 2:18, 2:18], "dihedral", reduce)
        assert not torch.allclose(tta, centre, atol=1e-4)
    # images of the crop size: the one crop is the image, the same as tta=dihedral
    torch.testing.assert_close(
        predict_with_tta(model_fn, images[..., :16, :16], "dihedral_crops", "max", crop_size=16),
        predict_with_tta(model_fn, images[..., :16, :16], "dihedral", "max"),
    )


def test_a_crop_mode_needs_its_crop_size():
    images = torch.rand(1, 4, 8, 8)
    with pytest.raises(ValueError, match="crop_size"):
        predict_with_tta(lambda x: torch.zeros(1, HPA2018.num_classes), images, "dihedral_crops")
    with pytest.raises(ValueError, match="crop_transforms"):
        tta_transforms("dihedral_crops")
    with pytest.raises(HPAInputError, match="evaluation option"):
        check_tta_options("dihedral_crops", "max")
    check_tta_options("dihedral_crops", "max", crop_size=32)
    with pytest.raises(HPAInputError, match="dihedral_crops"):
        check_tta_options("crops", "mean")
    with pytest.raises(HPAInputError, match="evaluation option"):
        HPAModule(name="seed_cnn", tta="dihedral_crops")


def test_tta_input_gives_a_crop_mode_the_whole_image():
    assert tta_input("dihedral", 32, 40) == TTAInput(image_size=32, load_size=40, crop_size=None)
    assert tta_input("none", 32, None) == TTAInput(32, None, None)
    assert tta_input("dihedral_crops", 32, 40) == TTAInput(
        image_size=40, load_size=None, crop_size=32
    )
    assert tta_input("dihedral_crops", 32, None) == TTAInput(32, None, 32)


def test_the_module_tests_a_crop_mode_on_the_whole_image_and_its_loss_on_the_centre(tmp_path):
    torch.manual_seed(6)
    module = HPAModule(name="seed_cnn", tta="dihedral_crops", tta_reduce="max", tta_crop_size=16)
    loader = tiny_loader(1)  # 32 px images
    result = cpu_trainer(tmp_path).test(module, loader, verbose=False)[0]

    batch = next(iter(loader))
    module.eval()
    with torch.no_grad():
        expected = predict_with_tta(
            lambda x: torch.sigmoid(module(x)), batch["image"], "dihedral_crops", "max", 16
        )
        centre = batch["image"][..., 8:24, 8:24]
        centre_loss = module.criterion(module(centre), batch["target"])
    torch.testing.assert_close(module.probabilities(batch["image"]), expected)
    _, tested = module.collected_test_predictions()
    torch.testing.assert_close(torch.from_numpy(tested), expected)
    assert result[TEST_LOSS] == pytest.approx(float(centre_loss), rel=1e-5)
