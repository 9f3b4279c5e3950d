import numpy as np
import pytest

from hpa.core.labels import HPA2018
from hpa.plots.rgby import class_names_of, rgby_composite


def test_composite_keeps_rgb_and_shows_yellow_as_red_plus_green():
    image = np.zeros((4, 2, 3), dtype=np.uint8)
    image[0, 0, 0] = 200  # red
    image[2, 0, 1] = 90  # blue
    image[3, 1, 2] = 100  # yellow
    rgb = rgby_composite(image)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0].tolist() == [200, 0, 0]
    assert rgb[0, 1].tolist() == [0, 0, 90]
    assert rgb[1, 2].tolist() == [50, 50, 0]


def test_composite_saturates_instead_of_wrapping():
    image = np.full((4, 1, 1), 255, dtype=np.uint8)
    assert rgby_composite(image)[0, 0].tolist() == [255, 255, 255]


def test_composite_refuses_other_shapes():
    with pytest.raises(ValueError, match="4 x H x W"):
        rgby_composite(np.zeros((3, 4, 4), dtype=np.uint8))


def test_class_names_of_a_multi_hot_row():
    row = np.zeros(HPA2018.num_classes, dtype=np.uint8)
    row[[0, 25]] = 1
    assert class_names_of(HPA2018, row) == "Nucleoplasm, Cytosol"
