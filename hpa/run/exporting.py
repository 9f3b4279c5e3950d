"""Export a checkpoint as a model that runs without the training stack (``python -m hpa.export``,
hpa/export.py).

``format=onnx`` (the only format) writes an .onnx file (``hpa.integrations.onnx_export``): uint8
RGBY images of the training size in, the 28 probabilities out, and in its metadata the class
names, the per-class thresholds, ``ensure_one_label``, the image size, the model name and the
training run's config (its ``.hydra/config.yaml`` as written). By default the file is
``model.onnx`` in the export's own run directory (``RunDir.ONNX_MODEL``); ``output=PATH`` puts it
elsewhere.

Before the file is written, onnxruntime's probabilities are compared with the checkpoint's on
the first ``check_images`` test images of the checkpoint's run (when its data can be read) and on
``random_images`` noise images; the largest difference is logged, and above ``tolerance`` the
export is refused (exit code 2). One checkpoint per file: test-time augmentation and ensembles of
several checkpoints stay in Python around the model (``hpa-predict backend=onnx tta=...
ckpt_path=[a.onnx,b.onnx]``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from omegaconf import DictConfig
from tqdm import tqdm

from hpa.core.errors import HPAInputError
from hpa.core.run_dir import RunDir
from hpa.data.reader import read_sample
from hpa.evaluation.tta import center_crop
from hpa.integrations.onnx_export import export_onnx
from hpa.models.checkpoints import checkpoint_paths, load_module
from hpa.run.reporting import run_data_root

log = logging.getLogger(__name__)

FORMATS = ("onnx",)


def export(cfg: DictConfig) -> Path:
    """Write the exported model; returns its path."""
    if cfg.format not in FORMATS:
        raise HPAInputError(f"format={cfg.format!r}: choose one of {', '.join(FORMATS)}")
    paths = checkpoint_paths(cfg.ckpt_path)
    if len(paths) != 1:
        raise HPAInputError(
            f"hpa-export writes one checkpoint per file, got {len(paths)}: export each, then "
            "average them with hpa-predict backend=onnx ckpt_path=[a.onnx,b.onnx]"
        )
    checkpoint = paths[0]
    trained_in = RunDir.of_checkpoint(checkpoint)
    image_size = trained_in.image_size_or(cfg.get("image_size"), checkpoint, "image_size")
    # a run trained on crops read its val and test images larger and took their centre crop;
    # with another image_size asked for, the whole image is read at that size
    load_size = trained_in.load_size() if not cfg.get("image_size") else None
    output = Path(cfg.output) if cfg.get("output") else RunDir(cfg.paths.output_dir).onnx_model
    module = load_module(checkpoint)
    train_config = trained_in.config_text()
    if not train_config:
        log.warning(
            "no %s beside %s: the export holds no training config", RunDir.CONFIG, checkpoint
        )
    check_images, fallback = run_test_images(
        trained_in, int(cfg.check_images), int(image_size), load_size
    )
    difference = export_onnx(
        module,
        output,
        int(image_size),
        train_config,
        check_images=check_images,
        num_random_images=int(cfg.random_images),
        tolerance=float(cfg.tolerance),
        load_size=load_size,
    )
    log.info(
        "wrote %s: %s at %d px; max |onnxruntime - torch| probability %.3g on %d test and %d "
        "random images (tolerance %g)",
        output,
        module.hparams.name,
        int(image_size),
        difference,
        0 if check_images is None else len(check_images),
        int(cfg.random_images),
        float(cfg.tolerance),
    )
    RunDir(cfg.paths.output_dir).write_export_check(
        {
            "model": str(output),
            "max_probability_difference": float(difference),
            "tolerance": float(cfg.tolerance),
            "test_images": 0 if check_images is None else len(check_images),
            "random_images": int(cfg.random_images),
            "random_only_because": fallback,
        }
    )
    return output


def run_test_images(
    run: RunDir, count: int, image_size: int, load_size: int | None = None
) -> tuple[np.ndarray | None, str | None]:
    """(up to ``count`` test-split images of a run, uint8 N x 4 x S x S, read from its data
    root's train/ folder at ``load_size`` and centre-cropped to ``image_size``, as the run saw
    them; None) or, with a warning, (None, why) when the run's split or images
    cannot be read: the check then runs on random images only, and export_check.json says
    why."""
    if count <= 0:
        return None, "check_images=0"
    data_root = run_data_root(run)
    try:
        if data_root is None:
            raise HPAInputError(f"the data root of {run} is unknown")
        ids = run.test_ids()[:count]
        if not len(ids):
            raise HPAInputError(f"{run.split_file} has no test split")
        images = [
            read_sample(data_root / "train", sample_id, load_size or image_size)
            for sample_id in tqdm(ids, "reading test images", leave=False)
        ]
    except HPAInputError as error:
        log.warning("checking the export on random images only: %s", error)
        return None, str(error)
    return center_crop(np.stack(images), image_size), None
