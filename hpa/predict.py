"""Predict the test images of a Kaggle-layout folder and write a submission.

``python -m hpa.predict ckpt_path=PATH data.root=ROOT [tta=dihedral]`` predicts every image in
``ROOT/test/``, in the order of ``ROOT/sample_submission.csv`` (or of the files present when there
is none), and writes ``submission.csv`` (``Id,Predicted``: space-separated class ids) and
``probabilities.csv`` into its run directory. Several checkpoints are averaged (an ensemble).
With ``data.on_bad_image=skip`` a bad image keeps its row in ``submission.csv`` with no class (and
has none in ``probabilities.csv``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader
from tqdm import tqdm

from hpa.data.cache import ensure_cache
from hpa.data.dataset import RGBYDataset, collate_samples
from hpa.data.reader import read_ids_csv
from hpa.data.validate import SKIPPED_IMAGES_FILE, valid_ids
from hpa.errors import HPAInputError, exit_on_input_error
from hpa.evaluation.thresholds import binarize
from hpa.evaluation.tta import check_tta_options
from hpa.io import write_csv
from hpa.labels import CHANNELS, CLASS_NAMES, format_target
from hpa.models.module import HPAModule
from hpa.run.checkpoints import checkpoint_paths, load_module, run_dir_of

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


def trained_image_size(checkpoint_path: Path) -> int | None:
    config_path = run_dir_of(checkpoint_path) / ".hydra" / "config.yaml"
    if not config_path.is_file():
        return None
    return int(OmegaConf.load(config_path).data.image_size)


@torch.inference_mode()
def predict_probabilities(
    model: HPAModule, loader: DataLoader, tta: str, reduce: str, device: torch.device
) -> np.ndarray:
    model.eval().to(device)
    model.tta, model.tta_reduce = tta, reduce
    batches = []
    for batch in tqdm(loader, desc="predict", unit="batch"):
        batches.append(model.probabilities(batch["image"].to(device)).float().cpu())
    return torch.cat(batches).numpy()


def predict(cfg: DictConfig) -> pd.DataFrame:
    check_tta_options(cfg.tta, cfg.tta_reduce)
    paths = checkpoint_paths(cfg.ckpt_path)
    root = Path(cfg.data.root)
    all_ids = test_ids(root)
    ids = valid_ids(root / "test", all_ids, cfg.data, cfg.paths.output_dir)
    image_size = cfg.data.image_size or trained_image_size(paths[0])
    if image_size is None:
        raise HPAInputError(f"image size of {paths[0]} unknown: set data.image_size")

    image_size, cache_dir = int(image_size), cfg.data.get("cache_dir")
    cache = (
        ensure_cache(root / "test", ids, image_size, cache_dir) if cfg.data.get("cache") else None
    )
    dataset = RGBYDataset(root / "test", ids, None, image_size, cache=cache)
    loader = DataLoader(
        dataset,
        batch_size=cfg.data.batch_size,
        num_workers=cfg.data.num_workers,
        collate_fn=collate_samples,
    )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    probabilities = np.zeros((len(ids), len(CLASS_NAMES)))
    thresholds = np.zeros(len(CLASS_NAMES))
    for path in paths:
        log.info("predicting %d images with %s (tta=%s)", len(ids), path, cfg.tta)
        model = load_module(path)
        probabilities += predict_probabilities(model, loader, cfg.tta, cfg.tta_reduce, device)
        thresholds += model.class_thresholds.cpu().numpy()
    probabilities /= len(paths)
    thresholds /= len(paths)  # an ensemble decides at the mean of its members' thresholds

    output_dir = Path(cfg.paths.output_dir)
    decisions = binarize(probabilities, thresholds, model.hparams.ensure_one_label)
    predicted = dict(zip(ids, map(format_target, decisions), strict=True))
    # Kaggle takes only a submission with every id: a skipped image (data.on_bad_image=skip,
    # listed in skipped_images.csv) is kept with no class
    submission = pd.DataFrame({"Id": all_ids, "Predicted": [predicted.get(i, "") for i in all_ids]})
    if len(ids) < len(all_ids):
        log.warning(
            "%d skipped test image(s) have an empty Predicted in submission.csv (%s)",
            len(all_ids) - len(ids),
            output_dir / SKIPPED_IMAGES_FILE,
        )
    write_csv(output_dir / "submission.csv", submission)
    probability_table = pd.DataFrame(probabilities, columns=list(CLASS_NAMES))
    probability_table.insert(0, "Id", ids)
    write_csv(output_dir / "probabilities.csv", probability_table)
    log.info("wrote %s", output_dir / "submission.csv")
    return submission


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    with exit_on_input_error():
        predict(cfg)


if __name__ == "__main__":
    main()
