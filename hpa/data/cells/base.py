"""What every segmentation provider offers, and the pieces they share.

A provider turns one sample into a cell label image: an int32 H x W array at the image's native
size, 0 for background and 1..K for the cells. The mask cache only needs ``segment_sample`` (a
provider may read anything it likes for a sample, e.g. a mask made elsewhere) and
``settings_key`` (the folder its masks are cached under, so that other settings never reuse
them). Providers that compute masks from pixels also offer ``segment`` on an in-memory image.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from hpa.data.cells.channels import read_native_sample


@runtime_checkable
class Segmenter(Protocol):
    """A segmentation provider: one sample in, one int32 (H, W) label image out."""

    name: ClassVar[str]

    def settings(self) -> dict[str, Any]:
        """The settings that change the masks (what ``settings_key`` hashes)."""
        ...

    def settings_key(self) -> str:
        """``{name}-{hash of the settings}``: the cache folder of this provider's masks."""
        ...

    def segment_sample(self, image_dir: str | Path, sample_id: str) -> np.ndarray:
        """The label image of sample ``sample_id`` whose channel files are in ``image_dir``."""
        ...


class SettingsMixin:
    """``settings`` and ``settings_key`` of a dataclass provider: its init fields are its settings.

    ``version`` is part of the key: bump it when a change of the algorithm changes the masks, so
    caches built by the old code are not reused.
    """

    name: ClassVar[str]
    version: ClassVar[int] = 1

    def settings(self) -> dict[str, Any]:
        return {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)  # type: ignore[arg-type]
            if field.init
        }

    def settings_key(self) -> str:
        described = {"name": self.name, "version": self.version, **self.settings()}
        encoded = json.dumps(described, sort_keys=True, default=str).encode()
        return f"{self.name}-{hashlib.sha256(encoded).hexdigest()[:12]}"


class ImageSegmenter(SettingsMixin):
    """A provider that segments pixels: ``segment_sample`` reads the sample at its native size and
    bit depth (``read_native_sample``) and calls ``segment``."""

    def segment(self, image: Any) -> np.ndarray:
        raise NotImplementedError

    def segment_sample(self, image_dir: str | Path, sample_id: str) -> np.ndarray:
        return self.segment(read_native_sample(image_dir, sample_id))
