"""Predict the test images of a Kaggle-layout folder and write a submission
(``python -m hpa.predict``, hpa/predict.py). A checkpoint of a single-cell run (the 2021 task)
writes Kaggle's 2021 submission instead, a prediction per cell (hpa/run/cell_prediction.py).

Every image in ``ROOT/test/`` is predicted, in the order of ``ROOT/sample_submission.csv`` (or of
the files present when there is none); ``submission.csv`` (``Id,Predicted``: space-separated
class ids) and ``probabilities.csv`` go into the run directory. Several models are averaged
(``hpa.evaluation.ensemble``). With ``data.on_bad_image=skip`` a bad image keeps its row in
``submission.csv`` with no class (and has none in ``probabilities.csv``).

Two backends (``backend=``):

- ``torch``: checkpoints, with ``Trainer.predict`` (hpa/run/torch_prediction.py);
- ``onnx``: .onnx files written by ``hpa-export``, with onnxruntime (hpa/run/onnx_prediction.py),
  in a process that imports neither torch nor Lightning nor timm.

Unset, the backend follows ``ckpt_path``: onnx for .onnx files, torch otherwise. This module
imports the torch backend only when it is used.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, ListConfig

from hpa.core.errors import HPAInputError
from hpa.core.labels import CHANNELS
from hpa.core.run_dir import RunDir, model_files
from hpa.data.reader import read_ids_csv
from hpa.data.validate import checked_samples
from hpa.evaluation import ensemble
from hpa.evaluation.thresholds import binarize

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx")
ONNX_SUFFIX = ".onnx"


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


def model_paths(
    ckpt_path: str | Path | Sequence[str | Path], backend: str | None = None
) -> tuple[str, list[Path]]:
    """(backend, model files) of ``ckpt_path``: checkpoints for torch, .onnx files for onnx (a
    folder: its ``**/checkpoints/best.ckpt`` or ``**/model.onnx``). ``backend`` None: onnx when
    ``ckpt_path`` names .onnx files."""
    given = [ckpt_path] if isinstance(ckpt_path, str | Path) else list(ckpt_path)
    if backend is None:
        backend = "onnx" if any(str(p).endswith(ONNX_SUFFIX) for p in given) else "torch"
    if backend not in BACKENDS:
        raise HPAInputError(f"backend={backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend == "onnx":
        paths = model_files(given, RunDir.ONNX_MODEL, what="ONNX model")
        not_onnx = [path for path in paths if path.suffix != ONNX_SUFFIX]
        if not_onnx:
            raise HPAInputError(
                f"{not_onnx[0]} is not an .onnx file: backend=onnx predicts with models exported "
                f"by hpa-export (hpa-export ckpt_path={not_onnx[0]})"
            )
    else:
        paths = model_files(given, RunDir.BEST_CHECKPOINT)
        onnx = [path for path in paths if path.suffix == ONNX_SUFFIX]
        if onnx:
            raise HPAInputError(
                f"{onnx[0]} is an ONNX model: predict with it with backend=onnx (or backend unset)"
            )
    return backend, paths


def predict(cfg: DictConfig) -> pd.DataFrame:
    ckpt_path = list(cfg.ckpt_path) if isinstance(cfg.ckpt_path, ListConfig) else cfg.ckpt_path
    backend, paths = model_paths(ckpt_path, cfg.get("backend"))
    root = Path(cfg.data.root)
    run_dir = RunDir(cfg.paths.output_dir)
    if backend == "torch":
        from hpa.run import cell_prediction  # Lightning, torch and timm

        stage = cell_prediction.cell_stage_for_prediction(cfg, RunDir.of_checkpoint(paths[0]))
        if stage is not None:  # a single-cell run (the 2021 task): Kaggle's 2021 submission
            return cell_prediction.predict_cells(cfg, stage, paths, root, run_dir)
    all_ids = test_ids(root)
    keep, skipped = checked_samples(
        root / "test", all_ids, cfg.data.get("validate", "fast"), cfg.data.get("on_bad_image")
    )
    run_dir.write_skipped_images(skipped)
    ids = all_ids[keep]

    if backend == "onnx":
        from hpa.run.onnx_prediction import onnx_members

        members, ensure_one_label, label_set = onnx_members(cfg, paths, root / "test", ids)
    else:
        from hpa.run.torch_prediction import checkpoint_members  # Lightning, torch and timm

        members, ensure_one_label, label_set = checkpoint_members(cfg, paths, root / "test", ids)
    probabilities, thresholds = ensemble.average(members)
    decisions = binarize(probabilities, thresholds, ensure_one_label)

    predicted = dict(zip(ids, map(label_set.format, decisions), strict=True))
    # Kaggle takes only a submission with every id: a skipped image (data.on_bad_image=skip,
    # listed in skipped_images.csv) is kept with no class
    submission = pd.DataFrame(
        {
            label_set.id_column: all_ids,
            "Predicted": [predicted.get(sample_id, "") for sample_id in all_ids],
        }
    )
    if len(ids) < len(all_ids):
        log.warning(
            "%d skipped test image(s) have an empty Predicted in %s (%s)",
            len(all_ids) - len(ids),
            RunDir.SUBMISSION,
            run_dir / RunDir.SKIPPED_IMAGES,
        )
    probability_table = pd.DataFrame(probabilities, columns=list(label_set.class_names))
    probability_table.insert(0, label_set.id_column, ids)
    run_dir.write_submission(submission, probability_table)
    log.info("wrote %s (backend=%s)", run_dir / RunDir.SUBMISSION, backend)
    return submission
