"""The torch backend of ``hpa.predict``: probabilities of checkpoints with ``Trainer.predict``
(the ``trainer`` group: device, precision), the images read by ``RGBYDataset``. Imported by
hpa/run/predicting.py only for ``backend=torch``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from pytorch_lightning.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader

from hpa.core.distributed import all_gather_rows
from hpa.core.errors import HPAInputError
from hpa.core.labels import LabelSet
from hpa.core.run_dir import RunDir
from hpa.data.cache import ensure_cache
from hpa.data.dataset import RGBYDataset, collate_samples
from hpa.data.transforms import evaluation_crop
from hpa.evaluation import ensemble
from hpa.evaluation.tta import tta_input
from hpa.models.checkpoints import load_module
from hpa.run import builders

log = logging.getLogger(__name__)


class ProbabilityWriter(BasePredictionWriter):
    """Collects the probabilities that ``predict_step`` returns, by dataset row, from every
    process: after ``Trainer.predict``, ``probabilities`` is (N, classes) in dataset order."""

    def __init__(self, num_rows: int) -> None:
        super().__init__(write_interval="batch")
        self.num_rows = num_rows
        self._rows: list[torch.Tensor] = []
        self._outputs: list[torch.Tensor] = []
        self.probabilities = np.zeros((0, 0))

    def on_predict_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._rows.clear()
        self._outputs.clear()

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0
    ) -> None:
        self._rows.append(batch["index"].detach().cpu())
        self._outputs.append(prediction.detach().float().cpu())

    def on_predict_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        strategy = trainer.strategy
        rows = torch.cat(all_gather_rows(strategy, torch.cat(self._rows)))
        outputs = torch.cat(all_gather_rows(strategy, torch.cat(self._outputs)))
        probabilities = np.zeros((self.num_rows, outputs.shape[1]))
        probabilities[rows.numpy()] = outputs.numpy()  # a row seen twice (padding) is the same
        self.probabilities = probabilities


def checkpoint_members(
    cfg: DictConfig, paths: Sequence[Path], image_dir: Path, ids: np.ndarray
) -> tuple[list[ensemble.Member], bool, LabelSet]:
    """(one ensemble member per checkpoint, ``ensure_one_label`` of the first, the label set they
    share) on the images of ``ids``, at ``data.image_size`` or the size the first checkpoint's
    run trained at."""
    trained_in = RunDir.of_checkpoint(paths[0])
    image_size = trained_in.image_size_or(cfg.data.image_size, paths[0], "data.image_size")
    # a run trained on crops (data.load_size) is given the centre crop, or (tta=dihedral_crops)
    # the whole image to take its own crops of
    load_size = cfg.data.get("load_size") or trained_in.load_size()
    sizes = tta_input(cfg.tta, int(image_size), load_size)
    loader = prediction_loader(cfg, image_dir, ids, sizes.image_size, sizes.load_size)
    writer = ProbabilityWriter(len(ids))
    trainer = builders.build_trainer(
        cfg, callbacks=[writer], loggers=[], enable_checkpointing=False
    )
    members, ensure_one_label, label_set = [], None, None
    for path in paths:
        log.info("predicting %d images with %s (tta=%s)", len(ids), path, cfg.tta)
        model = load_module(path, cfg.tta, cfg.tta_reduce, sizes.crop_size)
        if label_set is not None and model.label_set != label_set:
            raise HPAInputError(
                f"{path} predicts the classes of {model.label_set.name}, {paths[0]} those of "
                f"{label_set.name}: ensemble members must share their label set"
            )
        label_set = model.label_set
        trainer.predict(model, dataloaders=loader, return_predictions=False)
        members.append(
            ensemble.Member(path, writer.probabilities, model.class_thresholds.cpu().numpy())
        )
        if ensure_one_label is None:  # the first checkpoint's, as hpa.eval decides
            ensure_one_label = bool(model.hparams.ensure_one_label)
    return members, bool(ensure_one_label), label_set


def prediction_loader(
    cfg: DictConfig, image_dir: Path, ids: np.ndarray, image_size: int, load_size: int | None
) -> DataLoader:
    """The test images (from the packed cache with ``data.cache=true``), in ``ids`` order; read
    at ``load_size`` and centre-cropped to ``image_size`` when one is given."""
    read_size = load_size or image_size
    cache = None
    if cfg.data.get("cache"):
        cache = ensure_cache(image_dir, ids, read_size, cfg.data.get("cache_dir"))
    crop = evaluation_crop(image_size, load_size)
    dataset = RGBYDataset(
        image_dir, ids, None, image_size, augmentation=crop, cache=cache, load_size=read_size
    )
    return DataLoader(
        dataset,
        batch_size=cfg.data.batch_size,
        num_workers=cfg.data.num_workers,
        collate_fn=collate_samples,
        pin_memory=torch.cuda.is_available(),
    )
