"""Predict the test images of a Kaggle-layout folder and write a submission
(``python -m hpa.predict``, hpa/predict.py).

Every image in ``ROOT/test/`` is predicted, in the order of ``ROOT/sample_submission.csv`` (or of
the files present when there is none), with ``Trainer.predict`` (the ``trainer`` group: device,
precision); ``submission.csv`` (``Id,Predicted``: space-separated class ids) and
``probabilities.csv`` go into the run directory. Several checkpoints are averaged
(``hpa.evaluation.ensemble``). With ``data.on_bad_image=skip`` a bad image keeps its row in
``submission.csv`` with no class (and has none in ``probabilities.csv``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from pytorch_lightning.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader

from hpa.data.cache import ensure_cache
from hpa.data.dataset import RGBYDataset, collate_samples
from hpa.data.reader import read_ids_csv
from hpa.data.transforms import evaluation_crop
from hpa.data.validate import checked_samples
from hpa.errors import HPAInputError
from hpa.evaluation import ensemble
from hpa.evaluation.thresholds import binarize
from hpa.evaluation.tta import tta_input
from hpa.labels import CHANNELS, CLASS_NAMES, format_target
from hpa.run import builders
from hpa.run.checkpoints import checkpoint_paths, load_module
from hpa.run.distributed import all_gather_rows
from hpa.run.run_dir import RunDir

log = logging.getLogger(__name__)


def test_ids(root: Path) -> np.ndarray:
    """Ids in the order of ``sample_submission.csv``, or of the files in ``ROOT/test/``."""
    submission_template = root / "sample_submission.csv"
    if submission_template.is_file():
        return read_ids_csv(submission_template)
    image_dir = root / "test"
    if not image_dir.is_dir():
        raise HPAInputError(f"{image_dir} does not exist: nothing to predict")
    suffix = f"_{CHANNELS[1]}"
    ids = sorted({path.stem[: -len(suffix)] for path in image_dir.glob(f"*{suffix}.*")})
    if not ids:
        raise HPAInputError(f"{image_dir} holds no {{Id}}_green.* images")
    return np.asarray(ids)


class ProbabilityWriter(BasePredictionWriter):
    """Collects the probabilities that ``predict_step`` returns, by dataset row, from every
    process: after ``Trainer.predict``, ``probabilities`` is (N, 28) in dataset order."""

    def __init__(self, num_rows: int) -> None:
        super().__init__(write_interval="batch")
        self.num_rows = num_rows
        self._rows: list[torch.Tensor] = []
        self._outputs: list[torch.Tensor] = []
        self.probabilities = np.zeros((0, len(CLASS_NAMES)))

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


def predict(cfg: DictConfig) -> pd.DataFrame:
    paths = checkpoint_paths(cfg.ckpt_path)
    root = Path(cfg.data.root)
    run_dir = RunDir(cfg.paths.output_dir)
    all_ids = test_ids(root)
    keep, skipped = checked_samples(
        root / "test", all_ids, cfg.data.get("validate", "fast"), cfg.data.get("on_bad_image")
    )
    run_dir.write_skipped_images(skipped)
    ids = all_ids[keep]
    trained_in = RunDir.of_checkpoint(paths[0])
    image_size = cfg.data.image_size or trained_in.image_size()
    if image_size is None:
        raise HPAInputError(f"image size of {paths[0]} unknown: set data.image_size")
    # a run trained on crops (data.load_size) is given the centre crop, or (tta=dihedral_crops)
    # the whole image to take its own crops of
    load_size = cfg.data.get("load_size") or trained_in.load_size()
    sizes = tta_input(cfg.tta, int(image_size), load_size)

    loader = _test_loader(cfg, root / "test", ids, sizes.image_size, sizes.load_size)
    writer = ProbabilityWriter(len(ids))
    trainer = builders.build_trainer(
        cfg, callbacks=[writer], loggers=[], enable_checkpointing=False
    )
    members = []
    for path in paths:
        log.info("predicting %d images with %s (tta=%s)", len(ids), path, cfg.tta)
        model = load_module(path, cfg.tta, cfg.tta_reduce, sizes.crop_size)
        trainer.predict(model, dataloaders=loader, return_predictions=False)
        members.append(
            ensemble.Member(path, writer.probabilities, model.class_thresholds.cpu().numpy())
        )
    probabilities, thresholds = ensemble.average(members)
    decisions = binarize(probabilities, thresholds, model.hparams.ensure_one_label)

    predicted = dict(zip(ids, map(format_target, decisions), strict=True))
    # Kaggle takes only a submission with every id: a skipped image (data.on_bad_image=skip,
    # listed in skipped_images.csv) is kept with no class
    submission = pd.DataFrame({"Id": all_ids, "Predicted": [predicted.get(i, "") for i in all_ids]})
    if len(ids) < len(all_ids):
        log.warning(
            "%d skipped test image(s) have an empty Predicted in %s (%s)",
            len(all_ids) - len(ids),
            RunDir.SUBMISSION,
            run_dir / RunDir.SKIPPED_IMAGES,
        )
    probability_table = pd.DataFrame(probabilities, columns=list(CLASS_NAMES))
    probability_table.insert(0, "Id", ids)
    run_dir.write_submission(submission, probability_table)
    log.info("wrote %s", run_dir / RunDir.SUBMISSION)
    return submission


def _test_loader(
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
