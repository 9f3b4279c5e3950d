"""One synthetic image: the signal of each stain over a Scene, then the camera, to 8 bits.

Red shows the microtubules, blue the nuclei, yellow the endoplasmic reticulum, and green the sum
of the motifs of the image's labels (``MOTIFS``), each with a random brightness.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hpa.core.labels import CHANNELS, HPA2018
from hpa.data.synthetic.motifs import MOTIFS
from hpa.data.synthetic.raster import blur, white_noise
from hpa.data.synthetic.scene import MIN_IMAGE_SIZE, Scene


def blue_signal(s: Scene) -> np.ndarray:
    brightness = s.per_pixel(s.rng.uniform(0.7, 1.0, s.cells.count))
    texture = 0.85 + 0.15 * s.band_noise(s.px(1.5))
    return s.nucleus_mask * brightness * texture * (1.0 - 0.35 * np.minimum(s.nucleoli, 1.0))


def green_signal(s: Scene, class_names: Sequence[str]) -> np.ndarray:
    total = 0.02 * s.cell_mask
    for class_name in class_names:
        total = total + s.rng.uniform(0.65, 1.0) * MOTIFS[class_name](s)
    return np.clip(total, 0.0, 1.0)


GAIN_RANGES = {
    "red": (0.5, 0.9),
    "green": (0.55, 1.0),
    "blue": (0.55, 1.0),
    "yellow": (0.45, 0.85),
}
"""Per-image brightness of each stain, drawn uniformly from these ranges."""


def photograph(signals: np.ndarray, s: Scene) -> np.ndarray:
    """Optics (blur), exposure (gain, offset) and camera noise of (4, S, S) signals, to 8 bits."""
    sigma = s.px(0.6, 0.4)
    blurred = np.stack([blur(signal, sigma) for signal in signals.astype(np.float32, copy=False)])
    low, high = np.array([GAIN_RANGES[color] for color in CHANNELS], dtype=np.float32).T
    gains = s.rng.uniform(low, high).astype(np.float32)[:, None, None]
    image = np.maximum(blurred, 0.0) * gains
    offsets = s.rng.uniform(0.005, 0.03, (len(CHANNELS), 1, 1)).astype(np.float32)
    noise_levels = s.rng.uniform(0.006, 0.015, (len(CHANNELS), 1, 1)).astype(np.float32)
    noise = white_noise(s.rng, image.shape)
    image = image + offsets + noise * (noise_levels + 0.03 * np.sqrt(image))  # read + shot noise
    image = image * np.float32(255.0) + np.float32(0.5)
    return np.clip(image, 0.0, 255.0, out=image).astype(np.uint8)


def _render(
    labels_row: Sequence[int] | np.ndarray, image_size: int, rng: np.random.Generator
) -> tuple[np.ndarray, Scene]:
    labels_row = np.asarray(labels_row)
    if labels_row.shape != (HPA2018.num_classes,):
        raise ValueError(
            f"expected a multi-hot vector of the {HPA2018.num_classes} classes of HPA2018, "
            f"got shape {labels_row.shape}"
        )
    if (
        isinstance(image_size, bool)
        or not isinstance(image_size, int | np.integer)
        or image_size < MIN_IMAGE_SIZE
    ):
        raise ValueError(f"image size must be an integer >= {MIN_IMAGE_SIZE}, got {image_size!r}")
    scene = Scene(int(image_size), rng)
    class_names = HPA2018.names_of(np.flatnonzero(labels_row))
    signals = {  # in this order: green and blue draw from rng
        "red": scene.microtubule_stain,
        "green": green_signal(scene, class_names),
        "blue": blue_signal(scene),
        "yellow": scene.reticulum_stain,
    }
    return photograph(np.stack([signals[color] for color in CHANNELS]), scene), scene


def render_sample(
    labels_row: Sequence[int] | np.ndarray, image_size: int, rng: np.random.Generator
) -> np.ndarray:
    """One synthetic image with these labels: uint8 (4, S, S) in RGBY order (CHANNELS).

    ``labels_row`` is a multi-hot vector of the 28 HPA2018 classes; the green channel is the clipped sum of
    the motifs of its classes, with brightness varying per image.
    """
    return _render(labels_row, image_size, rng)[0]


def render_sample_with_compartments(
    labels_row: Sequence[int] | np.ndarray, image_size: int, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """render_sample's image (the same pixels for the same rng state) and the masks of its cell
    compartments: {name in COMPARTMENTS: S x S bool}. MOTIF_COMPARTMENTS says which mask each
    class's motif draws into."""
    image, scene = _render(labels_row, image_size, rng)
    return image, scene.compartment_masks()
