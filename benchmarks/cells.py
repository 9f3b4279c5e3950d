"""Cell-scoring methods side by side on two synthetic 2021 cell sets from different generators,
over seeds: the method is chosen on validation cells, the table reports test cells.

Generators: ``project`` (hpa.data.synthetic.cells, the embedded default of
``experiment=single_cell``) and ``alt`` (benchmarks/alt_cells.py, written apart from it with
other cell shapes and patterns: the held-out generator). For each generator and seed, from one
data set of ``--images`` training images:

- ``broadcast``: an image model (``experiment=single_cell``), every cell its image's scores;
- ``cam``: the same checkpoint, cells scored by its class activation maps (``hpa-eval
  cells=cam``);
- ``crops``: a cell-crop model (``cells=crops``), each cell scored on its own crop;
- ``ensemble``: the weighted mean of the three per cell, weights chosen on validation cells
  (``hpa-ensemble-cells``);
- with ``--more``: ``cam_puzzle`` (an image model trained with ``model.map_consistency=1``,
  scored by cam), ``crops_mil`` (bags of 8 cells, ``model.mil_pooling=attention``) and
  ``crops_pseudo`` (a second crop model trained on the crop model's train-cell scores, started
  from its weights).

Every run scores its validation and test cells; the table gives both (cell mAP at mask IoU 0.6,
mean ± sd over seeds) and the share of truth cells the segmentation matched. Choose a method on
the validation column; the test column is the report.

    python -m benchmarks.cells                                   # both generators, seeds 0,1,2
    python -m benchmarks.cells --generators alt --seeds 0 --images 120 --epochs 1   # a smoke run
    python -m benchmarks.cells --methods broadcast,cam                          # image models only

Runs go to ``--root`` (default logs/cells), one folder per generator, budget, seed and method;
finished ones are not run again. Synthetic scores show how the methods differ on synthetic
cells; they predict nothing about real data.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks.alt_cells import ensure_alt_cell_set
from benchmarks.common import REPO
from hpa.core.run_dir import RunDir

log = logging.getLogger("benchmarks.cells")

CORE_METHODS = ("broadcast", "cam", "crops", "ensemble")
MORE_METHODS = ("cam_puzzle", "crops_mil", "crops_pseudo")
SCORED = "cells.score_splits=[val,test]"


def run(arguments: list[str]) -> None:
    line = [sys.executable, "-m", *arguments]
    log.info("%s", " ".join(line))
    result = subprocess.run(line, cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"failed ({result.returncode}): {' '.join(line)}\n{result.stderr[-3000:]}")


class SeedRuns:
    """The runs of one generator, budget and seed under ``folder``."""

    def __init__(self, folder: Path, data: list[str], seed: int, overrides: list[str]) -> None:
        self.folder = folder
        self.common = [f"seed={seed}", *data, f"paths.root_dir={REPO}", "report=false", *overrides]

    def train(self, name: str, *overrides: str) -> RunDir:
        run_dir = RunDir(self.folder / name)
        if not run_dir.is_finished():
            line = ["hpa.train", "experiment=single_cell", *self.common, *overrides]
            run([*line, f"hydra.run.dir={run_dir}"])
        return run_dir

    def evaluate(self, name: str, trained: RunDir, *overrides: str) -> RunDir:
        run_dir = RunDir(self.folder / name)
        if not run_dir.is_finished():
            checkpoint = f"ckpt_path={trained.best_checkpoint}"
            run(
                [
                    "hpa.eval",
                    checkpoint,
                    *overrides,
                    f"hydra.run.dir={run_dir}",
                    f"paths.root_dir={REPO}",
                ]
            )
        return run_dir

    def ensemble(self, name: str, members: list[RunDir]) -> RunDir:
        run_dir = RunDir(self.folder / name)
        if not run_dir.is_finished():
            listed = ",".join(str(member.path) for member in members)
            run(["hpa.ensemble_cells", f"members=[{listed}]", f"hydra.run.dir={run_dir}"])
        return run_dir


def method_runs(runs: SeedRuns, methods: tuple[str, ...]) -> dict[str, RunDir]:
    """The run of each of ``methods`` (its metrics hold val/cell_map and test/cell_map)."""
    result: dict[str, RunDir] = {}
    if {"broadcast", "cam", "ensemble"} & set(methods):
        result["broadcast"] = runs.train("broadcast", "cells=broadcast", SCORED)
        result["cam"] = runs.evaluate("cam", result["broadcast"], "cells=cam", SCORED)
    if {"crops", "ensemble", "crops_pseudo"} & set(methods):
        result["crops"] = runs.train("crops", "cells=crops", "cells.score_splits=[train,val,test]")
    if "ensemble" in methods:
        members = [result["broadcast"], result["cam"], result["crops"]]
        result["ensemble"] = runs.ensemble("ensemble", members)
    if "cam_puzzle" in methods:
        result["cam_puzzle"] = runs.train(
            "puzzle", "cells=cam", "model.map_consistency=1.0", SCORED
        )
    if "crops_mil" in methods:
        result["crops_mil"] = runs.train(
            "crops_mil",
            "cells=crops",
            "data.crops.bag_size=8",
            "model.mil_pooling=attention",
            SCORED,
        )
    if "crops_pseudo" in methods:
        crops = result["crops"]
        result["crops_pseudo"] = runs.train(
            "crops_pseudo",
            "cells=crops",
            f"data.crops.pseudo_labels={crops.split_cells_path('train')}",
            f"model.init_from={crops.best_checkpoint}",
            SCORED,
        )
    return {method: result[method] for method in methods}


def data_overrides(generator: str, images: int, seed: int) -> list[str]:
    if generator == "project":
        return [f"data.synthetic_cells.seed={seed}", f"data.synthetic_cells.num_train={images}"]
    root = ensure_alt_cell_set(
        REPO / "data" / f"alt-cells-n{images}-seed{seed}", num_train=images, seed=seed
    )
    # the project set's image size and batch (conf/data/synthetic_cells.yaml) on the 2021 layout
    return ["data=hpa2021", f"data.root={root}", "data.image_size=128", "data.batch_size=32"]


def summary(values: list[float]) -> str:
    array = np.asarray(values, dtype=np.float64)
    spread = array.std(ddof=1) if len(array) > 1 else 0.0
    return f"{array.mean():.3f} ± {spread:.3f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=REPO / "logs" / "cells")
    parser.add_argument("--generators", default="project,alt")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--images", type=int, default=600, help="training images of each set")
    parser.add_argument("--epochs", type=int, default=None, help="trainer.max_epochs")
    parser.add_argument(
        "--more", action="store_true", help="also cam_puzzle, crops_mil, crops_pseudo"
    )
    parser.add_argument(
        "--methods",
        default=None,
        help=f"a subset, comma-separated, of {', '.join(CORE_METHODS + MORE_METHODS)}",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    overrides = [f"trainer.max_epochs={args.epochs}"] if args.epochs else []
    budget = f"n{args.images}" + (f"-e{args.epochs}" if args.epochs else "")
    seeds = [int(seed) for seed in args.seeds.split(",")]
    methods = CORE_METHODS + (MORE_METHODS if args.more else ())
    if args.methods:
        methods = tuple(args.methods.split(","))
        unknown = sorted(set(methods) - set(CORE_METHODS + MORE_METHODS))
        if unknown:
            parser.error(f"unknown methods: {', '.join(unknown)}")
    for generator in args.generators.split(","):
        metrics: dict[str, list[dict]] = {method: [] for method in methods}
        for seed in seeds:
            folder = args.root / generator / budget / f"seed{seed}"
            runs = SeedRuns(folder, data_overrides(generator, args.images, seed), seed, overrides)
            for method, run_dir in method_runs(runs, methods).items():
                metrics[method].append(run_dir.metrics())
        print(
            f"\n{generator} generator, {args.images} training images, seeds {args.seeds}: cell mAP@0.6, mean ± sd"
        )
        print(f"{'method':<14}{'validation':>16}{'test':>16}{'cells matched':>16}")
        for method in methods:
            val = summary([m["val/cell_map"] for m in metrics[method]])
            test = summary([m["test/cell_map"] for m in metrics[method]])
            matched = [
                m["test/cell_match_rate"] for m in metrics[method] if "test/cell_match_rate" in m
            ]
            print(f"{method:<14}{val:>16}{test:>16}{summary(matched) if matched else '-':>16}")
        chosen = max(
            methods, key=lambda method: np.mean([m["val/cell_map"] for m in metrics[method]])
        )
        print(f"chosen on validation: {chosen}")


if __name__ == "__main__":
    main()
