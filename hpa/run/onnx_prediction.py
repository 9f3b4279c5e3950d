"""The ONNX backend of ``hpa.predict``: probabilities of .onnx files written by ``hpa-export``,
with onnxruntime, on numpy batches read by ``hpa.data.reader`` (or the packed cache of
``hpa.data.cache``). Test-time augmentation (``hpa.evaluation.tta``) and the ensemble of several
files are computed here, around the models.

This module and everything it imports work without torch, Lightning and timm: a machine that only
predicts installs numpy, pandas, OpenCV, Pillow, onnxruntime, Hydra and tqdm (docs,
explain-and-export.md).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from omegaconf import DictConfig
from tqdm import tqdm

from hpa.core.errors import HPAInputError
from hpa.core.labels import LabelSet
from hpa.data.cache import PackedImages, ensure_cache
from hpa.data.reader import read_sample
from hpa.evaluation import ensemble
from hpa.evaluation.tta import CROP_TTA_MODES, center_crop, check_tta_options, predict_with_tta
from hpa.integrations.onnx_runtime import OnnxPredictor

log = logging.getLogger(__name__)


def onnx_members(
    cfg: DictConfig, paths: Sequence[Path], image_dir: Path, ids: np.ndarray
) -> tuple[list[ensemble.Member], bool, LabelSet]:
    """(one ensemble member per .onnx file, ``ensure_one_label`` of the first, the label set they
    share) on the images of ``ids``, at the image size the files were exported at (the centre
    crop of images read at their load size, as their runs saw val and test images); every file
    reads the same batches."""
    if cfg.tta in CROP_TTA_MODES:
        raise HPAInputError(
            f"tta={cfg.tta} takes crops of the whole images, which an ONNX model (fixed to its "
            "exported image size) cannot: predict with the checkpoint (backend=torch)"
        )
    check_tta_options(cfg.tta, cfg.tta_reduce)
    predictors = [OnnxPredictor(path) for path in paths]
    image_size, load_size = _image_sizes(predictors, cfg.data.get("image_size"))
    label_set = predictors[0].label_set
    for predictor in predictors[1:]:
        if predictor.label_set != label_set:
            raise HPAInputError(
                f"{predictor.path} predicts the classes of {predictor.label_set.name}, "
                f"{predictors[0].path} those of {label_set.name}: ensemble members must share "
                "their label set"
            )
    log.info(
        "predicting %d images with %d ONNX model(s) on %s (tta=%s)",
        len(ids),
        len(predictors),
        ", ".join(predictors[0].providers),
        cfg.tta,
    )
    probabilities = [np.zeros((len(ids), label_set.num_classes)) for _ in predictors]
    batches = _image_batches(cfg, image_dir, ids, image_size, load_size)
    for rows, images in tqdm(batches, "predicting", total=-(-len(ids) // cfg.data.batch_size)):
        for predictor, table in zip(predictors, probabilities, strict=True):
            table[rows] = predict_with_tta(predictor.probabilities, images, cfg.tta, cfg.tta_reduce)
    members = [
        ensemble.Member(predictor.path, table, predictor.thresholds)
        for predictor, table in zip(predictors, probabilities, strict=True)
    ]
    return members, predictors[0].ensure_one_label, label_set


def _image_sizes(predictors: Sequence[OnnxPredictor], requested: int | None) -> tuple[int, int]:
    """(image size, load size) that every file shares."""
    sizes = {
        predictor.path: (predictor.image_size, predictor.load_size) for predictor in predictors
    }
    if len(set(sizes.values())) > 1:
        described = ", ".join(
            f"{path}: {size} px crops of {load} px images" for path, (size, load) in sizes.items()
        )
        raise HPAInputError(f"the ONNX models take different image sizes ({described})")
    image_size, load_size = next(iter(sizes.values()))
    if requested and int(requested) != image_size:
        raise HPAInputError(
            f"data.image_size={requested}, but {predictors[0].path} takes {image_size} px images "
            "only (the size it was exported at): leave data.image_size unset"
        )
    return image_size, load_size


def _image_batches(
    cfg: DictConfig, image_dir: Path, ids: np.ndarray, image_size: int, load_size: int
) -> Iterator[tuple[slice, np.ndarray]]:
    """(rows, uint8 B x 4 x S x S batch) in ``ids`` order, read at ``load_size`` and
    centre-cropped to ``image_size``: from the packed cache with ``data.cache=true`` (built if
    needed), else decoded from the files, as the torch backend's ``RGBYDataset`` reads them."""
    cache: PackedImages | None = None
    if cfg.data.get("cache"):
        cache = ensure_cache(image_dir, ids, load_size, cfg.data.get("cache_dir"))
    batch_size = int(cfg.data.batch_size)
    for start in range(0, len(ids), batch_size):
        rows = slice(start, min(start + batch_size, len(ids)))
        if cache is not None:
            images = [cache[row] for row in range(rows.start, rows.stop)]
        else:
            images = [read_sample(image_dir, sample_id, load_size) for sample_id in ids[rows]]
        yield rows, center_crop(np.stack(images), image_size)
