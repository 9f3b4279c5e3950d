"""The RGBY Dataset: one item per sample id, read from the Kaggle layout on disk or from the
packed image cache (hpa.data.cache)."""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from hpa.data.cache import PackedImages
from hpa.data.reader import read_sample
from hpa.data.transforms import apply_augmentation


class RGBYDataset(Dataset):
    """Samples as dicts: ``image`` (uint8 4 x S x S), ``target`` (float 28), ``index`` (int).

    ``ids`` and ``labels`` are numpy arrays, not lists or DataFrames, so that DataLoader workers
    do not copy them page by page through reference counting (pytorch/pytorch#13246).
    ``labels`` may be None for unlabelled (test) images; ``target`` is then absent.
    With ``cache`` (and ``cache_rows``, the cache row of each id) images come from the packed
    cache instead of being decoded; the items are the same.
    """

    def __init__(
        self,
        image_dir: str | Path,
        ids: np.ndarray,
        labels: np.ndarray | None,
        image_size: int,
        augmentation: A.Compose | None = None,
        cache: PackedImages | None = None,
        cache_rows: np.ndarray | None = None,
    ) -> None:
        self.image_dir = Path(image_dir)
        self.ids = np.asarray(ids).astype(str)
        self.labels = None if labels is None else np.asarray(labels, dtype=np.float32)
        self.image_size = image_size
        self.augmentation = augmentation
        self.cache = cache
        if cache is not None:
            rows = np.arange(len(self.ids)) if cache_rows is None else cache_rows
            self.cache_rows = np.asarray(rows, dtype=np.int64)
            if len(self.cache_rows) != len(self.ids):
                raise ValueError("cache_rows needs one cache row per id")
            if cache.shape[2:] != (image_size, image_size):
                raise ValueError(f"{cache.path} holds {cache.shape[2]} px images, not {image_size}")

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        image = self.read_image(index)
        image = apply_augmentation(self.augmentation, image)
        item: dict[str, torch.Tensor | int] = {"image": torch.from_numpy(image), "index": index}
        if self.labels is not None:
            item["target"] = torch.from_numpy(self.labels[index])
        return item

    def read_image(self, index: int) -> np.ndarray:
        """The unaugmented uint8 4 x S x S image of item ``index``."""
        if self.cache is not None:
            return self.cache[self.cache_rows[index]]
        return read_sample(self.image_dir, self.ids[index], self.image_size)
