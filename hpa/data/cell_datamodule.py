"""The data module of the 2021 single-cell task: the image-level steps of ``HPADataModule`` on a
2021-layout root (``ID,Label`` with ids joined by ``|``, images of several sizes, resized for
the model), plus what the cell stage of a run needs: where cell masks are cached, where cell
truth lives, and the embedded synthetic cell set.

The model is trained on whole images with their image-level labels; cells are segmented and
scored afterwards (hpa.run.cells). So only the settings below are new:

- ``synthetic_cells``: a synthetic 2021 set generated into ``root`` once
  (hpa.data.synthetic.cells), the default data of ``experiment=single_cell``;
- ``cell_truth``: the folder of ``{ID}_cells.png`` and ``cells.csv`` (null: none; cell mAP is
  scored where it exists);
- ``masks_dir``: where masks are cached (null: beside the image cache of the root);
- ``segment_processes``, ``shard``, ``num_shards``: how ``hpa-segment`` and the cell stage
  segment (processes on this machine; this job's share of a cluster array).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from hpa.core.errors import HPAInputError
from hpa.core.labels import LabelSet
from hpa.data.cache import cache_folder
from hpa.data.cells.truth import CellTruth
from hpa.data.config import DataConfig
from hpa.data.datamodule import HPADataModule
from hpa.data.synthetic.cells import ensure_cell_set

MASKS_FOLDER = "cell_masks"


@dataclass(frozen=True)
class SyntheticCellsConfig:
    """A synthetic 2021 set (hpa.data.synthetic.cells.ensure_cell_set's settings)."""

    num_train: int
    num_test: int = 0
    sizes: tuple[int, ...] = (256, 320, 384)
    seed: int = 0
    negative_fraction: float = 0.1


@dataclass(frozen=True)
class CellConfig:
    """The cell settings of a ``data`` node (conf/data/hpa2021.yaml documents each)."""

    cell_truth: Path | None = None
    masks_dir: Path | None = None
    segment_processes: int = 1
    shard: int = 0
    num_shards: int = 1
    synthetic_cells: SyntheticCellsConfig | None = None

    def __post_init__(self) -> None:
        if self.segment_processes < 1:
            raise HPAInputError(f"data.segment_processes must be >= 1: {self.segment_processes}")
        if self.num_shards < 1 or not 0 <= self.shard < self.num_shards:
            raise HPAInputError(
                f"data.shard={self.shard} must lie in 0..data.num_shards-1 ({self.num_shards})"
            )

    @classmethod
    def split_from(cls, data: Mapping) -> tuple[CellConfig, dict]:
        """(the cell settings, the rest of the ``data`` node for ``DataConfig``)."""
        data = dict(data)
        cell_keys = [field.name for field in fields(cls)]
        settings = {key: data.pop(key) for key in cell_keys if key in data}
        synthetic = settings.pop("synthetic_cells", None)
        if synthetic is not None:
            known = [field.name for field in fields(SyntheticCellsConfig)]
            unknown = sorted(set(synthetic) - set(known))
            if unknown:
                raise HPAInputError(
                    f"unknown key(s) {', '.join(f'data.synthetic_cells.{k}' for k in unknown)}; "
                    f"data.synthetic_cells has {', '.join(known)}"
                )
            synthetic = SyntheticCellsConfig(
                **{**synthetic, "sizes": tuple(int(s) for s in synthetic.get("sizes", (256,)))}
            )
        for key in ("cell_truth", "masks_dir"):
            if settings.get(key) is not None:
                settings[key] = Path(settings[key])
        return cls(**settings, synthetic_cells=synthetic), data


def masks_dir_of(root: Path, masks_dir: Path | None, cache_dir: Path | None) -> Path:
    """Where the cell masks of a root's images (train/ and test/ alike: ids are unique) are
    cached: ``masks_dir`` when given, else ``cell_masks/`` in the root's image cache folder
    (``ROOT/cache``, or under ``cache_dir`` when the root is read-only)."""
    if masks_dir is not None:
        return Path(masks_dir)
    return cache_folder(Path(root) / "train", cache_dir) / MASKS_FOLDER


class CellDataModule(HPADataModule):
    """``HPADataModule`` on a 2021-layout root, with the cell settings of ``cells``."""

    def __init__(
        self,
        config: DataConfig,
        label_set: LabelSet,
        augment: Mapping[str, Mapping] | None = None,
        cells: CellConfig | None = None,
    ) -> None:
        super().__init__(config, label_set, augment)
        self.cells = cells or CellConfig()

    @classmethod
    def from_config(
        cls, data: Mapping, label_set: LabelSet, augment: Mapping[str, Mapping] | None = None
    ) -> CellDataModule:
        if isinstance(data, DictConfig):
            data = OmegaConf.to_container(data, resolve=True)
        cells, rest = CellConfig.split_from(data)
        return cls(DataConfig.from_mapping(rest), label_set, augment, cells)

    def prepare_data(self) -> None:
        super().prepare_data()
        synthetic = self.cells.synthetic_cells
        if synthetic is not None:
            ensure_cell_set(
                self.root,
                num_train=synthetic.num_train,
                num_test=synthetic.num_test,
                sizes=synthetic.sizes,
                seed=synthetic.seed,
                negative_fraction=synthetic.negative_fraction,
            )

    def masks_dir(self) -> Path:
        """Where the masks of this root's images are cached (``masks_dir_of``)."""
        return masks_dir_of(self.root, self.cells.masks_dir, self.config.cache.cache_dir)

    def image_dataset(self, split: str):
        """The image-level dataset of ``split``, whose images' cells the cell stage scores."""
        return self.datasets[split]

    def cell_truth(self) -> CellTruth | None:
        """The cell truth of the root, or None when the set has none."""
        folder = self.cells.cell_truth
        if folder is None or not (folder / "cells.csv").is_file():
            return None
        return CellTruth(folder, self.label_set)
