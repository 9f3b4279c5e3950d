"""The RGBY Dataset: one item per sample id, read from the Kaggle layout on disk or from the
packed image cache (hpa.data.cache), and the collate function that batches its items."""

from __future__ import annotations

import math
from pathlib import Path

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset, default_collate, get_worker_info

from hpa.data.cache import PackedImages
from hpa.data.reader import read_sample
from hpa.data.transforms import interleave_channels


class SampleBatch(list):
    """Items read together by ``RGBYDataset.__getitems__``: their images are the rows of one
    B x S x S x 4 uint8 tensor, ``images``, which ``collate_samples`` passes on as the batch."""

    def __init__(self, images: torch.Tensor) -> None:
        super().__init__()
        self.images = images


class RGBYDataset(Dataset):
    """Samples as dicts: ``image`` (uint8 4 x S x S), ``target`` (float, one per class of the
    labels), ``index`` (int).

    ``image`` is a 4 x S x S view of S x S x 4 pixels (channels-last strides), the layout of the
    cache, of albumentations and of the models. A DataLoader reads a batch through
    ``__getitems__``: each sample is read, augmented and written straight into its row of the
    batch before the next is read, so its intermediate arrays stay in the CPU cache and the batch
    needs no stacking copy (``collate_samples``). That is about 1.5 times the samples per second
    of reading the items one by one and stacking them (README, "Fast data path").

    ``ids`` and ``labels`` are numpy arrays, not lists or DataFrames, so that DataLoader workers
    do not copy them page by page through reference counting (pytorch/pytorch#13246).
    ``labels`` may be None for unlabelled (test) images; ``target`` is then absent.
    With ``cache`` (and ``cache_rows``, the cache row of each id) images come from the packed
    cache instead of being decoded; the items are the same.

    ``load_size`` (None: ``image_size``) is the size images are read (and cached) at; a larger
    one needs an ``augmentation`` that crops them to ``image_size`` (hpa.data.transforms).
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
        load_size: int | None = None,
    ) -> None:
        self.image_dir = Path(image_dir)
        self.ids = np.asarray(ids).astype(str)
        self.labels = None if labels is None else np.asarray(labels, dtype=np.float32)
        self.image_size = image_size
        self.load_size = image_size if load_size is None else load_size
        if self.load_size != image_size and augmentation is None:
            raise ValueError(
                f"images read at {self.load_size} px need an augmentation cropping them to "
                f"{image_size} px"
            )
        self.augmentation = augmentation
        self.cache = cache
        if cache is not None:
            rows = np.arange(len(self.ids)) if cache_rows is None else cache_rows
            self.cache_rows = np.asarray(rows, dtype=np.int64)
            if len(self.cache_rows) != len(self.ids):
                raise ValueError("cache_rows needs one cache row per id")
            if cache.image_size != self.load_size:
                raise ValueError(
                    f"{cache.path} holds {cache.image_size} px images, not {self.load_size}"
                )
        self._read_buffer: np.ndarray | None = None  # one cache row, reused for every sample

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> SampleBatch:
        """The items of ``indices`` (what a DataLoader asks for one batch), their images written
        into one new B x S x S x 4 tensor."""
        size = self.image_size
        images = new_uint8_tensor((len(indices), size, size, 4))
        rows = images.numpy()
        items = SampleBatch(images)
        for position, index in enumerate(indices):
            self.write_image(index, rows[position])
            item: dict[str, torch.Tensor | int] = {
                "image": images[position].permute(2, 0, 1),
                "index": index,
            }
            if self.labels is not None:
                item["target"] = torch.from_numpy(self.labels[index])
            items.append(item)
        return items

    def write_image(self, index: int, out: np.ndarray) -> None:
        """Write item ``index``'s (augmented) S x S x 4 uint8 image into ``out``; an index that
        carries a seed (``hpa.data.epoch_seeding.SeededIndex``) reseeds the augmentation first."""
        seed_augmentation(self.augmentation, index)
        if self.augmentation is None and self.cache is not None:
            self.cache.read_into(self.cache_rows[index], out)
            return
        image = self._read_interleaved(index)
        if self.augmentation is not None:
            image = self.augmentation(image=image)["image"]
        out[...] = image

    def read_image(self, index: int) -> np.ndarray:
        """The unaugmented, uncropped uint8 4 x L x L image of item ``index`` (a fresh array; L:
        the load size)."""
        if self.cache is not None:
            return self.cache[self.cache_rows[index]]
        return read_sample(self.image_dir, self.ids[index], self.load_size)

    def _read_interleaved(self, index: int) -> np.ndarray:
        """Item ``index``'s unaugmented L x L x 4 image (L: the load size); from the cache, in a
        buffer reused by the next call."""
        if self.cache is None:
            return interleave_channels(read_sample(self.image_dir, self.ids[index], self.load_size))
        if self._read_buffer is None:
            self._read_buffer = np.empty(self.cache.shape[1:], dtype=np.uint8)
        return self.cache.read_into(self.cache_rows[index], self._read_buffer)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_read_buffer": None}  # each worker makes its own


def seed_augmentation(augmentation, index: int) -> None:
    """Reseed ``augmentation`` (albumentations) with ``index.seed`` when the index carries one."""
    seed = getattr(index, "seed", None)
    if augmentation is not None and seed is not None:
        augmentation.set_random_seed(seed)


def new_uint8_tensor(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised uint8 tensor; in a DataLoader worker, in shared memory, as torch's own
    collate allocates its batches: a worker hands its batches over through shared memory, and a
    batch allocated elsewhere would be copied there."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=torch.uint8)
    prototype = torch.empty(0, dtype=torch.uint8)
    storage = prototype._typed_storage()._new_shared(math.prod(shape))
    return prototype.new(storage).view(shape)


def collate_samples(items: list[dict]) -> dict:
    """``default_collate`` of dataset items, with the images batched in channels-last memory.

    The batch's ``image`` is B x 4 x S x S like any NCHW batch; its strides are channels-last,
    the layout the models run in. Items read by ``RGBYDataset.__getitems__`` (a ``SampleBatch``)
    already hold their images in one tensor, which becomes the batch as it is; other items'
    images are stacked.
    """
    if isinstance(items, SampleBatch):
        batch = default_collate([{k: v for k, v in item.items() if k != "image"} for item in items])
        batch["image"] = items.images.permute(0, 3, 1, 2)
        return batch
    batch = default_collate([{**item, "image": item["image"].permute(1, 2, 0)} for item in items])
    batch["image"] = batch["image"].permute(0, 3, 1, 2)
    return batch
