"""Kaggle's 2021 submission from a single-cell run (``hpa-predict`` on a checkpoint whose run
scored cells, ``experiment=single_cell``).

Every image of ``ROOT/sample_submission.csv`` (``ID,ImageWidth,ImageHeight,...``) is read from
``ROOT/test/``: segmented at its own size (the run's ``segment`` settings, or ``segment=``),
its cells scored by the run's method (``cells``, or ``cells=``) from the model on the image
resized for it, and written as ``class confidence mask`` triples (hpa.evaluation.
cell_submission), each mask the COCO RLE of the cell at the image's size. Several checkpoints
average their cell scores. A sample row without its images, or an image whose size is not the
row's, stops the run naming the row.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from hpa.core.errors import HPAInputError
from hpa.core.run_dir import RunDir
from hpa.data.cell_datamodule import masks_dir_of
from hpa.data.validate import checked_samples
from hpa.evaluation.cell_submission import (
    ID,
    IMAGE_HEIGHT,
    IMAGE_WIDTH,
    prediction_string,
    read_sample_submission,
    write_submission,
)
from hpa.evaluation.tta import tta_input
from hpa.models.checkpoints import load_module
from hpa.run.cells import CellStage, cell_stage_of, run_cell_config, scored_images
from hpa.run.torch_prediction import prediction_loader

log = logging.getLogger(__name__)


def cell_stage_for_prediction(cfg: DictConfig, trained_in: RunDir) -> CellStage | None:
    """The cell stage of ``hpa-predict``: ``cells=``/``segment=`` of the command line, else the
    training run's; None for a run of the image task."""
    run_cells, run_segment = run_cell_config(trained_in)
    cells = cfg.get("cells") or run_cells
    segment = cfg.get("segment") or run_segment
    processes = int(cfg.data.get("segment_processes") or 1)
    return cell_stage_of(cells, segment, processes)


def predict_cells(
    cfg: DictConfig, stage: CellStage, paths: Sequence[Path], root: Path, run_dir: RunDir
) -> pd.DataFrame:
    """Write ``submission.csv`` in the 2021 format (see the module docstring); returns it."""
    sample = read_sample_submission(root / "sample_submission.csv")
    image_dir = root / "test"
    ids = sample[ID].to_numpy(dtype=str)
    keep, skipped = checked_samples(
        image_dir, ids, cfg.data.get("validate", "fast"), cfg.data.get("on_bad_image")
    )
    run_dir.write_skipped_images(skipped)
    ids = ids[keep]
    stage.use_masks_dir(masks_dir_of(root, cfg.data.get("masks_dir"), cfg.data.get("cache_dir")))

    trained_in = RunDir.of_checkpoint(paths[0])
    image_size = trained_in.image_size_or(cfg.data.image_size, paths[0], "data.image_size")
    if stage.needs_crops:
        stage.use_crops(_run_crop_settings(trained_in))
    sizes = tta_input("none", int(image_size), cfg.data.get("load_size") or trained_in.load_size())
    loader = prediction_loader(cfg, image_dir, ids, sizes.image_size, sizes.load_size)
    expected = {
        sample_id: (int(height), int(width))
        for sample_id, width, height in zip(
            sample[ID], sample[IMAGE_WIDTH], sample[IMAGE_HEIGHT], strict=True
        )
    }
    summed: dict[str, np.ndarray] = {}
    for path in paths:
        model = load_module(path)
        log.info("scoring the cells of %d images with %s (cells=%s)", len(ids), path, stage.method)
        for image in scored_images(stage, model, loader, ids, image_dir):
            _check_size(image.sample_id, image.cells.shape, expected[image.sample_id])
            summed[image.sample_id] = summed.get(image.sample_id, 0) + image.scores
    predictions = {}
    for sample_id, scores in summed.items():
        cells = stage.masks.load(sample_id)
        predictions[sample_id] = prediction_string(cells, scores / len(paths))
    submission = write_submission(run_dir / RunDir.SUBMISSION, sample, predictions)
    log.info(
        "wrote %s: %d images, %d cells (cells=%s)",
        run_dir / RunDir.SUBMISSION,
        len(submission),
        sum(len(scores) for scores in summed.values()),
        stage.method,
    )
    return submission


def _run_crop_settings(trained_in: RunDir) -> dict | None:
    """The ``data.crops`` settings of a crop model's run (None: the defaults)."""
    if not trained_in.is_run():
        return None
    crops = trained_in.data_config().get("crops")
    return None if crops is None else OmegaConf.to_container(crops, resolve=True)


def _check_size(sample_id: str, shape: tuple[int, int], expected: tuple[int, int]) -> None:
    if tuple(shape) != expected:
        raise HPAInputError(
            f"sample_submission.csv: ID {sample_id!r} says {expected[1]}x{expected[0]} px, its "
            f"images in test/ are {shape[1]}x{shape[0]} px"
        )
