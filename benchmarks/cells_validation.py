"""Cell mAP of each cell-scoring method on the validation split of the runs of
``python -m benchmarks.cells``: the set the default method is chosen on (its test figures are
the report). Reuses each seed's best checkpoint and cached masks.

    python -m benchmarks.cells_validation --root logs/cells --seeds 0,1,2
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

from hpa.core.run_dir import RunDir
from hpa.data.dataset import collate_samples
from hpa.evaluation.cell_map import CellMAP
from hpa.models.checkpoints import load_module
from hpa.run import builders
from hpa.run.cells import cell_stage_of, scored_images

METHODS = ("broadcast", "cam")


def validation_cell_map(run: RunDir, method: str) -> float:
    model = load_module(run.best_checkpoint)
    datamodule = builders.build_evaluation_datamodule(run.data_config(), model, run.split_file)
    datamodule.setup("test")
    stage = cell_stage_of({"method": method}, dict(run.config().segment))
    stage.use_masks_dir(datamodule.masks_dir())
    dataset, truth = datamodule.datasets["val"], datamodule.cell_truth()
    loader = DataLoader(dataset, batch_size=32, collate_fn=collate_samples)
    metric = CellMAP(num_classes=model.label_set.num_classes)
    for image in scored_images(stage, model, loader, dataset.ids, datamodule.root / "train"):
        truth_cells, truth_classes = truth.load(image.sample_id)
        metric.add_image(image.sample_id, truth_cells, truth_classes, image.cells, image.scores)
    return metric.compute()["map"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("logs/cells"))
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    seeds = [int(seed) for seed in args.seeds.split(",")]
    print(f"validation cell mAP@0.6, seeds {args.seeds}, mean ± sd")
    for method in METHODS:
        values = np.array(
            [validation_cell_map(RunDir(args.root / f"seed{s}" / "train"), method) for s in seeds]
        )
        spread = values.std(ddof=1) if len(values) > 1 else 0.0
        print(f"{method:<12}{values.mean():.3f} ± {spread:.3f}  {np.round(values, 4).tolist()}")


if __name__ == "__main__":
    main()
