"""Stamps for the green patterns: Gaussian dots, anti-aliased strokes and rings on a float
canvas, softened by a small blur (sizes in pixels of the image being drawn)."""

from __future__ import annotations

import math

import cv2
import numpy as np

_SUBPIXEL_BITS = 4  # OpenCV draws at 1/16 px with shift=4
_SCALE = 1 << _SUBPIXEL_BITS


def blur(field: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(field, (0, 0), max(sigma, 0.3))


def dots(size: int, points: np.ndarray, sigma: float, brightness: np.ndarray | float = 1.0):
    """Gaussian spots of peak ``brightness`` at (x, y) ``points``."""
    canvas = np.zeros((size, size), dtype=np.float32)
    if len(points):
        x = np.clip(points[:, 0].astype(int), 0, size - 1)
        y = np.clip(points[:, 1].astype(int), 0, size - 1)
        weight = np.broadcast_to(np.asarray(brightness, dtype=np.float32), (len(points),))
        np.add.at(canvas, (y, x), weight * np.float32(2 * math.pi * max(sigma, 0.3) ** 2))
    return blur(canvas, sigma)


def _fixed(points: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(points) * _SCALE).astype(np.int32)


def strokes(size: int, polylines: list[np.ndarray], width: float, softness: float) -> np.ndarray:
    """Open polylines (each (n, 2) x, y) of ``width`` px, blurred by ``softness`` px."""
    canvas = np.zeros((size, size), dtype=np.float32)
    if polylines:
        thickness = max(1, round(width))
        shapes = [_fixed(line) for line in polylines]
        cv2.polylines(canvas, shapes, False, 1.0, thickness, cv2.LINE_AA, _SUBPIXEL_BITS)
    return blur(canvas, softness)


def rings(size: int, centres: np.ndarray, radii: np.ndarray, softness: float) -> np.ndarray:
    """Hollow circles one pixel wide."""
    canvas = np.zeros((size, size), dtype=np.float32)
    for (x, y), radius in zip(_fixed(centres), _fixed(radii), strict=True):
        cv2.circle(canvas, (int(x), int(y)), int(radius), 1.0, 1, cv2.LINE_AA, _SUBPIXEL_BITS)
    return blur(canvas, softness)


def segment(x: float, y: float, angle: float, length: float) -> np.ndarray:
    """A straight segment of ``length`` centred on (x, y), as a 2-point polyline."""
    dx, dy = 0.5 * length * math.cos(angle), 0.5 * length * math.sin(angle)
    return np.array([[x - dx, y - dy], [x + dx, y + dy]])


def wander(rng: np.random.Generator, start: np.ndarray, steps: int, step: float, turn: float):
    """A random walk of ``steps`` steps that keeps its direction up to ``turn`` rad per step."""
    heading = rng.uniform(0, 2 * math.pi)
    points = [np.asarray(start, dtype=np.float64)]
    for _ in range(steps):
        heading += rng.normal(0, turn)
        points.append(points[-1] + step * np.array([math.cos(heading), math.sin(heading)]))
    return np.array(points)
