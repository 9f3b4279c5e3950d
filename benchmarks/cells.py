"""Cell-scoring methods side by side on the synthetic 2021 cell sets, over seeds.

For each seed, one single-cell run (``experiment=single_cell`` with ``seed=S`` and a synthetic
set drawn with the same seed) trains the image model; its best checkpoint is then evaluated by
``hpa-eval`` once per method (``cells=broadcast``, ``cells=cam``), so that the methods differ
only in how they score cells. The table gives the test cell mAP at mask IoU 0.6 and the share
of truth cells the segmentation matched, mean ± sd over the seeds.

    python -m benchmarks.cells                               # seeds 0,1,2 (about 25 min, 2 cores)
    python -m benchmarks.cells --seeds 0 --images 120 --epochs 1   # a smoke run

Runs go to ``--root`` (default logs/cells), one folder per seed and method; finished ones are
not run again. Synthetic scores show how the methods differ on the synthetic cells; they
predict nothing about real data.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks.common import REPO
from hpa.core.metric_names import TEST_CELL_MAP, TEST_CELL_MATCH_RATE, TEST_F1_MACRO
from hpa.core.run_dir import RunDir

log = logging.getLogger("benchmarks.cells")

METHODS = ("broadcast", "cam")


def run(arguments: list[str]) -> None:
    line = [sys.executable, "-m", *arguments]
    log.info("%s", " ".join(line))
    result = subprocess.run(line, cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"failed ({result.returncode}): {' '.join(line)}\n{result.stderr[-3000:]}")


def train(root: Path, seed: int, overrides: list[str]) -> RunDir:
    run_dir = RunDir(root / f"seed{seed}" / "train")
    if not run_dir.is_finished():
        run(
            [
                "hpa.train",
                "experiment=single_cell",
                f"seed={seed}",
                f"data.synthetic_cells.seed={seed}",
                f"hydra.run.dir={run_dir}",
                f"paths.root_dir={REPO}",
                "report=false",
                *overrides,
            ]
        )
    return run_dir


def evaluate(root: Path, seed: int, trained: RunDir, method: str) -> dict[str, float]:
    run_dir = RunDir(root / f"seed{seed}" / method)
    if not run_dir.is_finished():
        run(
            [
                "hpa.eval",
                f"ckpt_path={trained.best_checkpoint}",
                f"cells={method}",
                f"hydra.run.dir={run_dir}",
                f"paths.root_dir={REPO}",
            ]
        )
    return run_dir.metrics()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=REPO / "logs" / "cells")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--images", type=int, default=None, help="data.synthetic_cells.num_train")
    parser.add_argument("--epochs", type=int, default=None, help="trainer.max_epochs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    overrides = []
    if args.images:
        overrides.append(f"data.synthetic_cells.num_train={args.images}")
    if args.epochs:
        overrides.append(f"trainer.max_epochs={args.epochs}")
    seeds = [int(seed) for seed in args.seeds.split(",")]
    scores = {method: [] for method in METHODS}
    for seed in seeds:
        trained = train(args.root, seed, overrides)
        for method in METHODS:
            scores[method].append(evaluate(args.root, seed, trained, method))

    print(f"\ncell scoring on the synthetic 2021 cell sets, seeds {args.seeds}, mean ± sd")
    print(f"{'method':<12}{'cell mAP@0.6':>18}{'cells matched':>18}{'image macro F1':>18}")
    for method in METHODS:
        row = [method]
        for name in (TEST_CELL_MAP, TEST_CELL_MATCH_RATE, TEST_F1_MACRO):
            values = np.array([metrics[name] for metrics in scores[method]])
            spread = values.std(ddof=1) if len(values) > 1 else 0.0
            row.append(f"{values.mean():.3f} ± {spread:.3f}")
        print(f"{row[0]:<12}{row[1]:>18}{row[2]:>18}{row[3]:>18}")
    cam = np.array([metrics[TEST_CELL_MAP] for metrics in scores["cam"]])
    broadcast = np.array([metrics[TEST_CELL_MAP] for metrics in scores["broadcast"]])
    print(f"cam - broadcast, per seed: {np.round(cam - broadcast, 3).tolist()}")


if __name__ == "__main__":
    main()
