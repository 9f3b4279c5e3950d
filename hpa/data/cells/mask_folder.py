"""Cell masks made elsewhere (e.g. HPA-Cell-Segmentation), read from a folder as a provider.

Each sample's mask is ``FOLDER/{ID}_cells.png``: a single-plane 8- or 16-bit PNG label image,
0 for background and 1..K for the cells, the size of the sample's channel images. A colour PNG
(a rendering of the masks rather than the labels) or a mask of another size is refused with the
file and both sizes named, before it can misalign every cell of the sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np
from PIL import Image

from hpa.core.errors import HPAInputError
from hpa.data.cells.base import SettingsMixin
from hpa.data.reader import find_channel_file

LABEL_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))


@dataclass(frozen=True)
class MaskFolderSegmenter(SettingsMixin):
    """Reads ``{folder}/{ID}{suffix}`` label images instead of segmenting.

    The cache key holds the folder's path, not its content: after replacing masks in place,
    clear the mask cache (or point the cache at a new folder).
    """

    name: ClassVar[str] = "masks"
    version: ClassVar[int] = 1

    folder: str
    """The folder of the label images."""
    suffix: str = "_cells.png"
    """What follows the sample id in a mask's file name."""

    def __post_init__(self) -> None:
        # an absolute path in the settings, so the cache key does not depend on the working dir
        object.__setattr__(self, "folder", str(Path(self.folder).expanduser().resolve()))

    def mask_path(self, sample_id: str) -> Path:
        return Path(self.folder) / f"{sample_id}{self.suffix}"

    def segment_sample(self, image_dir: str | Path, sample_id: str) -> np.ndarray:
        """The sample's label image as int32, checked against its blue channel's size."""
        path = self.mask_path(sample_id)
        if not path.is_file():
            raise HPAInputError(f"missing cell mask {path} for sample {sample_id!r}")
        mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if mask is None:
            raise HPAInputError(f"cannot decode cell mask {path}: not an image, or truncated")
        if mask.ndim != 2 or mask.dtype not in LABEL_DTYPES:
            planes = 1 if mask.ndim == 2 else mask.shape[2]
            raise HPAInputError(
                f"cell mask {path} has {planes} plane(s) of {mask.dtype}: expected one plane of "
                "uint8 or uint16 cell labels (0 background, 1..K cells), not a colour rendering"
            )
        channel = find_channel_file(image_dir, sample_id, "blue")
        with Image.open(channel) as image:  # reads the header only
            width, height = image.size
        if mask.shape != (height, width):
            raise HPAInputError(
                f"cell mask {path} is {mask.shape[1]}x{mask.shape[0]} px but its image {channel} "
                f"is {width}x{height} px"
            )
        return mask.astype(np.int32)
