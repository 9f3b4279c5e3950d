"""Pixel-level primitives of the synthetic images: blur, noise, ridges, ellipses, fixed point."""

from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np


@lru_cache(maxsize=8)
def pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column coordinates of every pixel of a size x size image (read-only float32)."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    ys.setflags(write=False)
    xs.setflags(write=False)
    return ys, xs


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, sigmaY=sigma)


@lru_cache(maxsize=64)
def spot_peak_gain(sigma: float) -> float:
    """Factor that brings the peak of a blurred unit impulse back to 1."""
    kernel = cv2.getGaussianKernel(2 * math.ceil(4 * sigma) + 1, sigma, cv2.CV_64F)
    return float(1.0 / kernel.max() ** 2)


def white_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Zero-mean, unit-variance uniform noise: 4x faster to draw than normal noise, and
    Gaussian anyway once blurred."""
    uniform = rng.random(shape, dtype=np.float32)
    return (uniform - np.float32(0.5)) * np.float32(math.sqrt(12.0))


@lru_cache(maxsize=64)
def blurred_noise_gain(sigma: float) -> float:
    """Factor that brings unit white noise back to std 1 after a Gaussian blur."""
    kernel = cv2.getGaussianKernel(2 * math.ceil(4 * sigma) + 1, sigma, cv2.CV_64F)
    return float(1.0 / np.sum(kernel**2))  # 2-D kernel = outer(k, k): std = sum(k^2)


def soft_inside(distance: np.ndarray, edge_width: float) -> np.ndarray:
    """1 well inside (distance < 0), 0 outside, a linear ramp of ``edge_width`` px between."""
    return np.clip(0.5 - distance / edge_width, 0.0, 1.0)


def ridges(phase: np.ndarray, power: int) -> np.ndarray:
    """Thin bright lines where ``phase`` is a multiple of 2 pi: ((1 + cos) / 2) ** power."""
    result = 0.5 + 0.5 * np.cos(phase)
    base = result
    for _ in range(power - 1):
        result = result * base
    return result


def ellipse_radius(
    direction: np.ndarray, semi_major: np.ndarray, semi_minor: np.ndarray, orientation: np.ndarray
) -> np.ndarray:
    """Distance from an ellipse's centre to its edge along ``direction`` (radians)."""
    relative = direction - orientation
    return 1.0 / np.sqrt(
        (np.cos(relative) / semi_major) ** 2 + (np.sin(relative) / semi_minor) ** 2
    )


DRAW_SHIFT = 4
"""OpenCV drawing calls get fixed-point coordinates with this many fractional bits."""


def fixed_point(value: np.ndarray | float) -> np.ndarray:
    """Pixel coordinates (or lengths) in OpenCV's fixed point for ``shift=DRAW_SHIFT``."""
    return np.rint(np.asarray(value) * (1 << DRAW_SHIFT)).astype(np.int32)
