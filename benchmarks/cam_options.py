"""``cells=cam``'s options on trained image models: output stride x weight, cell mAP of the
validation cells (to choose on) and of the test cells (to report), over runs.

Each run is an image model trained by ``experiment=single_cell cells=broadcast`` (for example
``benchmarks.cells``' ``broadcast`` runs); its best checkpoint, data and split are used as they
are. For each output stride the class maps of every val and test image are computed once
(``hpa.models.activation_maps.with_output_stride``), then every weight is scored by
``hpa.evaluation.cell_scoring.cam_scores`` against the cell truth. Weight 0 is broadcast.

    python -m benchmarks.cam_options logs/cells/alt/n600/seed{0,1,2}/broadcast \\
        logs/cells/project/n600/seed0/broadcast
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from hpa.core.run_dir import RunDir
from hpa.data.dataset import collate_samples
from hpa.evaluation.cell_map import CellMAP
from hpa.evaluation.cell_scoring import cam_scores
from hpa.models.activation_maps import activation_maps_and_logits, with_output_stride
from hpa.models.checkpoints import load_module
from hpa.run import builders
from hpa.run.cells import CELL_MAP_IOU, cell_stage_of

SPLITS = ("val", "test")


@dataclass
class ScoredCells:
    """One image's inputs to cam_scores and its cell truth."""

    sample_id: str
    probabilities: np.ndarray
    maps: dict[int, np.ndarray]  # output stride -> (C, h, w)
    cells: np.ndarray
    truth_cells: np.ndarray
    truth_classes: dict


def collect(run: RunDir, strides: list[int]) -> dict[str, list[ScoredCells]]:
    """Every val and test image of ``run`` that has cell truth, with its maps at each stride."""
    module = load_module(run.best_checkpoint)
    by_stride = {stride: with_output_stride(module, stride) for stride in strides}
    datamodule = builders.build_evaluation_datamodule(run.data_config(), module, run.split_file)
    datamodule.prepare_data()
    datamodule.setup("test")
    stage = cell_stage_of({"method": "broadcast"}, dict(run.config().segment))
    stage.use_masks_dir(datamodule.masks_dir())
    truth = datamodule.cell_truth()
    collected: dict[str, list[ScoredCells]] = {}
    for split in SPLITS:
        dataset = datamodule.image_dataset(split)
        stage.masks.ensure_masks(datamodule.root / "train", list(dataset.ids), processes=1)
        images = []
        for batch in DataLoader(dataset, batch_size=32, collate_fn=collate_samples):
            with torch.inference_mode():
                module.eval()
                probabilities = torch.sigmoid(module(batch["image"]).float()).numpy()
            maps = {
                stride: activation_maps_and_logits(model, batch["image"]).maps.numpy()
                for stride, model in by_stride.items()
            }
            for row, index in enumerate(batch["index"].tolist()):
                sample_id = str(dataset.ids[index])
                if not truth.has(sample_id):
                    continue
                truth_cells, truth_classes = truth.load(sample_id)
                images.append(
                    ScoredCells(
                        sample_id,
                        probabilities[row],
                        {stride: stride_maps[row] for stride, stride_maps in maps.items()},
                        stage.masks.load(sample_id),
                        truth_cells,
                        truth_classes,
                    )
                )
        collected[split] = images
    return collected


def cell_map(images: list[ScoredCells], stride: int, weight: float) -> float:
    metric = CellMAP(iou_threshold=CELL_MAP_IOU)
    for image in images:
        scores = cam_scores(
            image.probabilities,
            int(image.cells.max()),
            class_maps=image.maps[stride],
            cells=image.cells,
            weight=weight,
        )
        metric.add_image(
            image.sample_id, image.truth_cells, image.truth_classes, image.cells, scores
        )
    return float(metric.compute()["map"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="image-model run folders")
    parser.add_argument("--strides", default="8,16,32")
    parser.add_argument("--weights", default="0,0.1,0.2,0.3,0.5,1")
    args = parser.parse_args(argv)
    strides = [int(value) for value in args.strides.split(",")]
    weights = [float(value) for value in args.weights.split(",")]

    scores = {split: np.zeros((len(args.runs), len(strides), len(weights))) for split in SPLITS}
    for r, path in enumerate(args.runs):
        collected = collect(RunDir(path), strides)
        for split in SPLITS:
            for s, stride in enumerate(strides):
                for w, weight in enumerate(weights):
                    scores[split][r, s, w] = cell_map(collected[split], stride, weight)
        print(f"collected {path}", flush=True)

    print(f"\ncell mAP@{CELL_MAP_IOU}, mean ± sd over {len(args.runs)} runs (weight 0: broadcast)")
    print(f"{'output stride':>14}{'weight':>8}{'validation':>18}{'test':>18}")
    for s, stride in enumerate(strides):
        for w, weight in enumerate(weights):
            cells = [scores[split][:, s, w] for split in SPLITS]
            text = [f"{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0:.3f}" for v in cells]
            print(f"{stride:>14}{weight:>8}{text[0]:>18}{text[1]:>18}")
    best = np.unravel_index(scores["val"].mean(axis=0).argmax(), scores["val"].shape[1:])
    print(f"chosen on validation: output_stride={strides[best[0]]} weight={weights[best[1]]}")
    broadcast = scores["test"][:, best[0], weights.index(0.0)] if 0.0 in weights else None
    if broadcast is not None:
        lead = scores["test"][:, best[0], best[1]] - broadcast
        print(f"its test lead over broadcast, per run: {' '.join(f'{v:+.3f}' for v in lead)}")


if __name__ == "__main__":
    main()
