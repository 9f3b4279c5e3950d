"""Reference stains (red, blue, yellow), the green channel from the class patterns, and the
microscope that turns the four into 8-bit images: uneven illumination, autofluorescent
background, optical blur, photon (Poisson) noise, read noise and a few hot pixels."""

from __future__ import annotations

import cv2
import numpy as np

from benchmarks.quality.cells import Scene, smooth_noise
from benchmarks.quality.drawing import blur, dots
from benchmarks.quality.patterns import PATTERNS

GAIN_RANGES = ((0.35, 0.8), (0.4, 1.0), (0.5, 0.95), (0.3, 0.7))  # RGBY
"""Per-image brightness of each stain, drawn uniformly."""


def _fibres(s: Scene) -> np.ndarray:
    """Fibrous texture, 0..1: noise stretched along one random direction per image."""
    noise = s.rng.standard_normal((s.size, s.size)).astype(np.float32)
    streaks = cv2.GaussianBlur(noise, (0, 0), sigmaX=5 * s.unit, sigmaY=0.7 * s.unit)
    turn = cv2.getRotationMatrix2D((s.size / 2, s.size / 2), s.rng.uniform(0, 180), 1.0)
    streaks = cv2.warpAffine(streaks, turn, (s.size, s.size), borderMode=cv2.BORDER_REFLECT)
    return 0.5 + 0.5 * np.tanh(streaks / max(float(streaks.std()), 1e-6))


def reference_stains(s: Scene) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Red (cytoskeleton), blue (nuclei, darker nucleoli), yellow (ER, densest near nuclei)."""
    red = s.in_cell * (1 - 0.5 * s.nucleus) * (0.35 + 0.65 * _fibres(s))
    nucleoli = dots(s.size, np.concatenate(s.nucleoli), 2.8 * s.unit)
    chromatin = 0.8 + 0.2 * np.tanh(smooth_noise(s.rng, s.size, 1.5 * s.unit))
    brightness = s.per_cell(s.rng.uniform(0.55, 1.0, len(s.cells)))
    blue = s.nucleus * brightness * chromatin * (1 - 0.5 * np.minimum(nucleoli, 1))
    near_nucleus = np.exp(-np.maximum(s.nucleus_distance, 0) / (20 * s.unit))
    yellow = s.in_cell * (1 - 0.7 * s.nucleus) * near_nucleus * (0.25 + 0.75 * s.reticulum)
    return red, blue, yellow


def green_stain(s: Scene, class_ids: np.ndarray) -> np.ndarray:
    """The sum of the patterns of ``class_ids``, each at its own brightness, over a faint
    cytoplasmic haze."""
    total = 0.03 * s.cytoplasm.astype(np.float32)
    for class_id in class_ids:
        total = total + s.rng.uniform(0.45, 1.0) * PATTERNS[class_id](s, s.some_cells())
    return np.clip(total, 0, 1.2)


def photograph(s: Scene, stains: list[np.ndarray]) -> np.ndarray:
    """(4, S, S) uint8 images of the RGBY ``stains`` (fields of about 0..1)."""
    rng, size = s.rng, s.size
    yy, xx = (np.mgrid[0:size, 0:size] / size).astype(np.float32)
    cx, cy = rng.uniform(0.2, 0.8, 2)
    illumination = 1 - rng.uniform(0.1, 0.35) * ((xx - cx) ** 2 + (yy - cy) ** 2)
    photons = rng.uniform(80, 400)  # per unit of intensity: the lower, the noisier
    images = []
    for stain, (low, high) in zip(stains, GAIN_RANGES, strict=True):
        background = rng.uniform(0.01, 0.06) * (1 + 0.3 * smooth_noise(rng, size, 20 * s.unit))
        signal = blur(stain.astype(np.float32), rng.uniform(0.6, 1.2) * s.unit)
        expected = np.clip(illumination * (rng.uniform(low, high) * signal + background), 0, None)
        image = rng.poisson(expected * photons) / photons
        image = image + rng.normal(0, rng.uniform(0.003, 0.01), image.shape)
        image[rng.random(image.shape) < 1e-4] = 1.0  # hot pixels
        images.append(np.clip(np.rint(image * 255), 0, 255).astype(np.uint8))
    return np.stack(images)


def render_sample(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """One image holding the classes of the multi-hot ``labels``: (4, S, S) uint8, RGBY."""
    scene = Scene(size, rng)
    red, blue, yellow = reference_stains(scene)
    green = green_stain(scene, np.flatnonzero(labels))
    return photograph(scene, [red, green, blue, yellow])
