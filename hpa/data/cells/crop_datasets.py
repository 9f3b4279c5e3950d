"""Datasets of cell crops (``cells=crops``): a model that sees one cell at a time, trained from
image-level labels.

Two shapes of item, both read from a ``CropCache`` (hpa.data.cells.crops):

- ``CellCropDataset``: one item per cell, ``image`` (uint8 4 x s x s) and ``target``, the
  labels of the cell's image (weak labels: a cell may lack a class its image has) or a soft
  label of the cell itself (pseudo-labels from a first run, ``cell_targets``). Trains a crop
  model exactly as images train the image model: same sampler, augmentation, loss.
- ``CellBagDataset``: one item per image, ``image`` (uint8 N x 4 x s x s: its cells' crops),
  ``cell_mask`` (N, True for a real cell) and the image's ``target``: a multiple-instance bag.
  The module pools its cells' logits into the image's (``model.mil_pooling``), so an image label
  needs only some of its cells. Validation and test always use bags of all cells: their metrics
  are image-level, comparable with the image model's. ``collate_bags`` pads a batch's bags to
  its largest.

Both take the train augmentation (albumentations, per crop), reseeded from the index's seed
when it carries one (``SeededIndex``), so a resumed run repeats its epochs. Single crops also
take the cell label augmentation (hpa.data.cells.label_augmentation: green dimmed makes a cell
Negative...), drawn from the same seed; a bag does not (relabelling one cell would not relabel
its image).
"""

from __future__ import annotations

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from hpa.data.cells.crops import CropCache, crop_positions
from hpa.data.cells.label_augmentation import LabelAugmentation
from hpa.data.dataset import seed_augmentation


class _CropReader:
    """What both datasets share: the crops of the images ``image_ids`` and their augmentation."""

    def __init__(
        self,
        crops: CropCache,
        image_ids: np.ndarray,
        augmentation: A.Compose | None,
        label_augmentation: LabelAugmentation | None,
    ) -> None:
        self.crops = crops
        self.image_ids = np.asarray(image_ids).astype(str)
        self.augmentation = augmentation
        self.label_augmentation = label_augmentation

    def augmented_pixels(self, crop: np.ndarray) -> np.ndarray:
        """An s x s x 4 crop after the pixel augmentation (a writable copy: the cache is
        memory-mapped and read-only)."""
        crop = np.array(crop)
        if self.augmentation is not None:
            crop = self.augmentation(image=crop)["image"]
        return np.ascontiguousarray(crop)

    def augmented(self, crop: np.ndarray, target: np.ndarray, seed: int | None):
        """(s x s x 4 crop, target) after the pixel and the label augmentations; the label
        augmentation draws from ``seed`` (the index's, None: fresh entropy)."""
        crop = self.augmented_pixels(crop)
        if self.label_augmentation is not None:
            crop, target = self.label_augmentation(crop, target, np.random.default_rng(seed))
        return crop, target


class CellCropDataset(Dataset, _CropReader):
    """One item per cell of ``image_ids``: ``image`` (uint8 4 x s x s), ``target`` (float,
    classes), ``index``. ``image_labels`` (images x classes) are the weak labels of every cell
    of each image; ``cell_targets`` (cells x classes, in the order of ``cell_index``), when
    given, replace them (soft pseudo-labels).

    ``ids`` names each cell ``{image id}/{cell id}``; ``labels`` are the targets (what the
    oversampling sampler weighs); ``image_rows``/``cell_ids`` locate each cell.
    """

    def __init__(
        self,
        crops: CropCache,
        image_ids: np.ndarray,
        image_labels: np.ndarray,
        augmentation: A.Compose | None = None,
        label_augmentation: LabelAugmentation | None = None,
        cell_targets: np.ndarray | None = None,
    ) -> None:
        _CropReader.__init__(self, crops, image_ids, augmentation, label_augmentation)
        self.image_rows, self.cell_ids = crops.index(self.image_ids)
        self.positions = crop_positions(self.image_rows)
        self.ids = np.array(
            [
                f"{self.image_ids[r]}/{c}"
                for r, c in zip(self.image_rows, self.cell_ids, strict=True)
            ]
        )
        image_labels = np.asarray(image_labels, dtype=np.float32)
        if cell_targets is None:
            self.labels = image_labels[self.image_rows]
        else:
            self.labels = np.asarray(cell_targets, dtype=np.float32)
            if self.labels.shape != (len(self.ids), image_labels.shape[1]):
                raise ValueError(
                    f"cell_targets has shape {self.labels.shape}, not ({len(self.ids)}, "
                    f"{image_labels.shape[1]})"
                )

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict:
        seed_augmentation(self.augmentation, index)
        crop = self.crops.load_crop(self.image_ids[self.image_rows[index]], self.positions[index])
        image, target = self.augmented(crop, self.labels[index], getattr(index, "seed", None))
        return {
            "image": torch.from_numpy(image).permute(2, 0, 1),
            "target": torch.from_numpy(target),
            "index": int(index),
        }

    def read_image(self, index: int) -> np.ndarray:
        """The unaugmented 4 x s x s crop of item ``index`` (channel statistics)."""
        crop = self.crops.load_crop(self.image_ids[self.image_rows[index]], self.positions[index])
        return np.array(crop).transpose(2, 0, 1)


class CellBagDataset(Dataset, _CropReader):
    """One item per image of ``image_ids`` with cells: ``image`` (uint8 N x 4 x s x s, its
    cells' crops), ``cell_mask`` (N,), ``target`` (the image's labels), ``index``. With
    ``bag_size``, a bag holds at most that many cells, drawn at random (seeded by the index's
    seed); without, all of them in order. Images without cells are left out: ``ids`` and
    ``labels`` are those of the images kept."""

    def __init__(
        self,
        crops: CropCache,
        image_ids: np.ndarray,
        image_labels: np.ndarray | None,
        augmentation: A.Compose | None = None,
        bag_size: int | None = None,
    ) -> None:
        image_ids = np.asarray(image_ids).astype(str)
        image_rows, _ = crops.index(image_ids)
        kept = np.unique(image_rows)
        _CropReader.__init__(self, crops, image_ids[kept], augmentation, None)
        self.ids = self.image_ids
        self.labels = (
            None if image_labels is None else np.asarray(image_labels, dtype=np.float32)[kept]
        )
        self.bag_size = bag_size

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict:
        seed = getattr(index, "seed", None)
        seed_augmentation(self.augmentation, index)
        _, crops = self.crops.load(self.ids[index])
        chosen = np.arange(len(crops))
        if self.bag_size is not None and len(crops) > self.bag_size:
            chosen = np.sort(np.random.default_rng(seed).choice(len(crops), self.bag_size, False))
        # a bag takes pixel augmentations only: relabelling one cell would not relabel its image
        images = [self.augmented_pixels(crops[position]) for position in chosen]
        item = {
            "image": torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2),
            "cell_mask": torch.ones(len(chosen), dtype=torch.bool),
            "index": int(index),
        }
        if self.labels is not None:
            item["target"] = torch.from_numpy(self.labels[index])
        return item


def collate_bags(items: list[dict]) -> dict:
    """A batch of bags: ``image`` B x N x 4 x s x s and ``cell_mask`` B x N, padded with blank
    crops (mask False) to the batch's largest bag."""
    largest = max(len(item["cell_mask"]) for item in items)
    padded = []
    for item in items:
        missing = largest - len(item["cell_mask"])
        image, mask = item["image"], item["cell_mask"]
        if missing:
            image = torch.cat([image, image.new_zeros((missing, *image.shape[1:]))])
            mask = torch.cat([mask, mask.new_zeros(missing)])
        padded.append({**item, "image": image, "cell_mask": mask})
    return default_collate(padded)
