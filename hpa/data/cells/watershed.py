"""Cell segmentation without learned weights: nuclei from the blue stain, cells grown from them.

1. Nuclei: the blue (DAPI) channel, smoothed, thresholded at a multiple of its Otsu threshold,
   holes filled, small specks dropped. Touching nuclei are split by a watershed of the distance
   transform seeded at its peaks; two pieces are merged back unless the distance falls by at
   least ``nucleus_split_depth`` from the lower of their peaks to the pass between them (the
   criterion of h-maxima, computed on the pieces' borders only, which is much faster): a waist
   between two round nuclei is deep, the ridge along an elongated nucleus is flat.
2. Cells: a cell-body signal, the mean of the red (microtubules) and yellow (ER) channels, each
   scaled by its 99.9th percentile so that neither dominates, then smoothed. Its foreground is a
   multiple of its Otsu threshold (plus the nuclei); a watershed of the inverted signal, seeded by
   the nuclei and confined to the foreground, gives each nucleus its cell: neighbours part where
   the cytoplasm signal is lowest. Foreground without a nucleus (debris) stays background.

Resolution: the same field of view comes as 512, 1728, 2048 or 3072 px images. Every size setting
is given in pixels of a 512 px image (``REFERENCE_SIDE``) and scaled by ``side / 512`` (areas by
its square), so a 3072 px image and its 512 px copy give the same cells. Cells cut by the image
border are kept: Kaggle's 2021 metric scores them too.

Speed: the cost grows with the pixel count, so images larger than ``max_side`` are segmented at
that size (INTER_AREA) and the labels enlarged back with nearest-neighbour. At the default 1024
the outlines move in steps of 2 native px at 2048 (3 at 3072), a small change for cells some 400
native px across, far within the metric's IoU of 0.6.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import cv2
import numpy as np
from scipy import ndimage as ndi
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from skimage.feature import peak_local_max
from skimage.filters import threshold_otsu
from skimage.segmentation import relabel_sequential, watershed

from hpa.core.errors import HPAInputError
from hpa.data.cells.base import ImageSegmenter
from hpa.data.cells.channels import as_channel_stack

REFERENCE_SIDE = 512
"""Size settings are in pixels of an image of this side, scaled to the image segmented."""

RED, BLUE, YELLOW = 0, 2, 3
"""Channel indices of the RGBY stack."""

PEAK_SPACING = 4.0
"""Distance peaks closer than this (px at 512) seed one piece; only bounds the number of seeds,
the pieces are merged by depth (``nucleus_split_depth``)."""

BODY_PERCENTILE = 99.9
"""Each cell-body channel is divided by this percentile of its pixels before they are averaged."""


@dataclass(frozen=True)
class WatershedSegmenter(ImageSegmenter):
    """Nuclei by Otsu + distance-transform watershed; cells by a seeded watershed (module doc).

    Sizes are in pixels of a 512 px image (areas in square pixels of it) and scale with the image.
    The defaults suit the HPA 2021 images, where at 512 px a nucleus is some 30-50 px across and a
    cell some 80-150 px.
    """

    name: ClassVar[str] = "watershed"
    version: ClassVar[int] = 1

    nucleus_sigma: float = 2.0
    """Gaussian smoothing of the blue channel: evens out nucleoli and noise before thresholding."""
    nucleus_threshold: float = 1.0
    """Nucleus foreground: blue above this multiple of its Otsu threshold."""
    min_nucleus_area: float = 60.0
    """Nuclei smaller than this (mitotic debris, specks) are dropped; about a 9 px disc."""
    nucleus_split_depth: float = 3.0
    """Touching nuclei are split where the half-width of the waist between them is at least this
    much below the half-width of the smaller one: larger values split less."""
    cell_sigma: float = 3.0
    """Gaussian smoothing of the cell-body signal: joins the filaments of a cell into one body."""
    cell_threshold: float = 0.5
    """Cell foreground: body signal above this multiple of its Otsu threshold. Below 1 because
    the edges of a cell are dimmer than its centre and Otsu would cut them off."""
    min_cell_area: float = 300.0
    """Cells smaller than this are dropped (a nucleus fragment without cytoplasm)."""
    max_side: int | None = 1024
    """Images with a longer side are segmented at this side and the labels enlarged back;
    null segments at the native size (slower, same cells)."""

    def __post_init__(self) -> None:
        positive = {
            "nucleus_sigma": self.nucleus_sigma,
            "nucleus_threshold": self.nucleus_threshold,
            "nucleus_split_depth": self.nucleus_split_depth,
            "cell_sigma": self.cell_sigma,
            "cell_threshold": self.cell_threshold,
        }
        for key, value in positive.items():
            if not value > 0:
                raise HPAInputError(f"segment.{key} must be > 0, got {value}")
        for key in ("min_nucleus_area", "min_cell_area"):
            if getattr(self, key) < 0:
                raise HPAInputError(f"segment.{key} must be >= 0, got {getattr(self, key)}")
        if self.max_side is not None and self.max_side < 64:
            raise HPAInputError(f"segment.max_side must be null or >= 64, got {self.max_side}")

    def segment(self, image: Any) -> np.ndarray:
        """The int32 (H, W) cell labels of a (4, H, W) RGBY image or an RGBY channel mapping."""
        stack = as_channel_stack(image)
        height, width = stack.shape[1:]
        working = _shrink(stack, self.max_side)
        scale = max(working.shape[1:]) / REFERENCE_SIDE
        nuclei = self.find_nuclei(working[BLUE], scale)
        cells = self.grow_cells(working, nuclei, scale)
        if working.shape != stack.shape:
            cells = _enlarge_nearest(cells, (height, width))
        return cells

    def find_nuclei(self, blue: np.ndarray, scale: float) -> np.ndarray:
        """Nucleus labels of the blue channel at ``scale`` x the reference size (module doc)."""
        smooth = _gaussian(blue, self.nucleus_sigma * scale)
        mask = _above_otsu(smooth, self.nucleus_threshold)
        mask = ndi.binary_fill_holes(mask)
        mask = _drop_small(ndi.label(mask)[0], self.min_nucleus_area * scale**2) > 0
        if not mask.any():
            return np.zeros(blue.shape, np.int32)
        distance = ndi.distance_transform_edt(mask)
        components, _ = ndi.label(mask)
        peaks = peak_local_max(
            distance,
            min_distance=max(1, round(PEAK_SPACING * scale)),
            labels=components,
            exclude_border=False,
        )
        markers = np.zeros(blue.shape, np.int32)
        markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
        pieces = watershed(-distance, markers, mask=mask)
        # a component without a peak (a flat one-pixel-wide sliver) is still one nucleus
        unseeded, _ = ndi.label(mask & (pieces == 0))
        pieces[unseeded > 0] = unseeded[unseeded > 0] + len(peaks)
        nuclei = _merge_shallow_splits(pieces, distance, self.nucleus_split_depth * scale)
        return relabel_sequential(nuclei)[0].astype(np.int32)

    def grow_cells(self, stack: np.ndarray, nuclei: np.ndarray, scale: float) -> np.ndarray:
        """Cell labels grown from ``nuclei`` over the red + yellow cell-body signal."""
        if not nuclei.any():
            return np.zeros(nuclei.shape, np.int32)
        body = (_unit_percentile(stack[RED]) + _unit_percentile(stack[YELLOW])) / 2
        body = _gaussian(body, self.cell_sigma * scale)
        foreground = _above_otsu(body, self.cell_threshold) | (nuclei > 0)
        foreground = ndi.binary_fill_holes(foreground)
        cells = watershed(-body, nuclei, mask=foreground)
        cells = _drop_small(cells, self.min_cell_area * scale**2)
        return relabel_sequential(cells)[0].astype(np.int32)


def _merge_shallow_splits(pieces: np.ndarray, height: np.ndarray, depth: float) -> np.ndarray:
    """``pieces`` with each pair of touching pieces merged unless ``height`` falls by at least
    ``depth`` from the lower of their two maxima to the pass between them (the highest point of
    their common border; a border pixel pair passes at the lower of its two heights)."""
    count = int(pieces.max())
    if count < 2:
        return pieces
    maxima = np.asarray(ndi.maximum(height, pieces, index=np.arange(count + 1)))
    first, second, passes = [], [], []
    for a, b, height_a, height_b in [
        (pieces[:, :-1], pieces[:, 1:], height[:, :-1], height[:, 1:]),  # left-right neighbours
        (pieces[:-1], pieces[1:], height[:-1], height[1:]),  # top-bottom neighbours
    ]:
        border = (a != b) & (a > 0) & (b > 0)
        first.append(np.minimum(a[border], b[border]))
        second.append(np.maximum(a[border], b[border]))
        passes.append(np.minimum(height_a[border], height_b[border]))
    first, second, passes = (np.concatenate(parts) for parts in (first, second, passes))
    if first.size == 0:
        return pieces
    pairs, index = np.unique(first.astype(np.int64) * (count + 1) + second, return_inverse=True)
    saddle = np.zeros(len(pairs))
    np.maximum.at(saddle, index, passes)
    first, second = pairs // (count + 1), pairs % (count + 1)
    shallow = np.minimum(maxima[first], maxima[second]) - saddle < depth
    merges = coo_matrix(
        (np.ones(shallow.sum()), (first[shallow], second[shallow])), shape=(count + 1,) * 2
    )
    _, component = connected_components(merges, directed=False)
    return np.where(pieces > 0, component[pieces] + 1, 0)


def _gaussian(plane: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur (OpenCV: several times faster than scipy at the sigmas of a 3072 px image)."""
    return cv2.GaussianBlur(plane, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)


def _above_otsu(plane: np.ndarray, factor: float) -> np.ndarray:
    """Pixels above ``factor`` x the Otsu threshold; none on an (almost) uniform plane."""
    if float(plane.max()) - float(plane.min()) < 1e-6:
        return np.zeros(plane.shape, bool)
    return plane > factor * threshold_otsu(plane)


def _unit_percentile(plane: np.ndarray) -> np.ndarray:
    """``plane`` divided by its BODY_PERCENTILE-th percentile (taken on every 4th pixel)."""
    top = float(np.percentile(plane[::4, ::4], BODY_PERCENTILE))
    return plane / top if top > 0 else plane


def _drop_small(labels: np.ndarray, min_area: float) -> np.ndarray:
    """``labels`` with the regions smaller than ``min_area`` pixels set to background."""
    areas = np.bincount(labels.ravel())
    small = areas < min_area
    small[0] = False
    if not small.any():
        return labels
    return np.where(small[labels], 0, labels)


def _shrink(stack: np.ndarray, max_side: int | None) -> np.ndarray:
    """``stack`` resized (INTER_AREA) so that its longer side is at most ``max_side``."""
    height, width = stack.shape[1:]
    if max_side is None or max(height, width) <= max_side:
        return stack
    factor = max_side / max(height, width)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return np.stack([cv2.resize(plane, size, interpolation=cv2.INTER_AREA) for plane in stack])


def _enlarge_nearest(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``labels`` resized to ``shape`` by nearest neighbour (pixel centres mapped back)."""
    rows = ((np.arange(shape[0]) + 0.5) * labels.shape[0] / shape[0]).astype(np.intp)
    cols = ((np.arange(shape[1]) + 0.5) * labels.shape[1] / shape[1]).astype(np.intp)
    rows = np.minimum(rows, labels.shape[0] - 1)
    cols = np.minimum(cols, labels.shape[1] - 1)
    return labels[rows[:, None], cols[None, :]]
