"""The levers of the 2018 leaderboard added one at a time, on the synthetic default, over seeds:
the seed's baseline, today's defaults, the defaults before 2026-12-07, then each lever on top of
today's defaults (so that each row changes one thing), and the table of
``hpa.compare --group-seeds`` (mean ± sd of test macro F1, sample F1 and minority recall over
the seeds). docs/levers.md lists them.

    python -m benchmarks.levers                          # every lever, seeds 0,1,2 (35 min, 2 idle cores)
    python -m benchmarks.levers --seeds 0 --levers defaults,average --images 200 --epochs 2  # smoke
    python -m benchmarks.levers --dry-run                # the commands, not run

Runs go to ``--root`` (default logs/levers), one folder per lever and seed; a seed whose run
finished is not run again, so an interrupted table resumes. Synthetic scores show how the levers
move a model on the synthetic images; they predict nothing about real data.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import REPO, merged
from hpa.core.run_dir import RunDir

log = logging.getLogger("benchmarks.levers")

AVERAGED_EPOCHS = 3
"""The default runs keep their last 3 epoch checkpoints (fewer in shorter runs) for hpa.average."""


@dataclass(frozen=True)
class Lever:
    """One row of the table. ``kind``: ``train`` (a run per seed with ``overrides``), ``average``
    (hpa.average of ``base``'s runs), ``eval`` (hpa.eval of ``base``'s best checkpoints with
    ``overrides``), ``stage2`` (a run per seed starting from ``base``'s best checkpoint)."""

    name: str
    kind: str
    overrides: tuple[str, ...] = ()
    base: str | None = None


def levers(last: int, stage2_size: int, stage2_epochs: int) -> list[Lever]:
    """Every lever: ``last`` epochs averaged, a second stage at ``stage2_size`` for
    ``stage2_epochs``. Since 2026-12-07 the defaults train with focal + Lovasz loss,
    oversampling and random crops of images read at 1.25 x: the rows that undo one of them
    (``bce_balanced``, ``no_oversampling``, ``whole_images``) say what it is worth here."""
    return [
        Lever("seed_baseline", "train", ("experiment=seed_cnn_baseline",)),
        Lever("defaults", "train", (f"callbacks.epoch_checkpoints.keep_last={last}",)),
        Lever("focal", "train", ("loss=focal",)),
        Lever("lovasz", "train", ("loss=lovasz",)),
        Lever("bce_balanced", "train", ("loss=bce_balanced",)),
        Lever("bce_ohem", "train", ("loss=bce_ohem",)),
        # a short run: an EMA spanning about 50 steps rather than the default's 1,000
        Lever("ema", "train", ("callbacks=ema", "callbacks.weight_averaging.decay=0.98")),
        Lever("swa", "train", ("callbacks=swa",)),
        Lever("average", "average", (f"--last={last}",), base="defaults"),
        Lever("whole_images", "train", ("data.load_size=null",)),
        Lever("no_oversampling", "train", ("data.oversample=false",)),
        Lever("dihedral_crops", "eval", ("tta=dihedral_crops", "tta_reduce=max"), base="defaults"),
        Lever(
            "init_from",
            "stage2",
            (f"data.image_size={stage2_size}", f"trainer.max_epochs={stage2_epochs}"),
            base="defaults",
        ),
        # the defaults until 2026-12-07
        Lever(
            "defaults_before_1207",
            "train",
            ("loss=bce_balanced", "data.oversample=false", "data.load_size=null"),
        ),
    ]


def with_bases(chosen: list[Lever], every: dict[str, Lever]) -> list[Lever]:
    """``chosen`` and the levers they build on, bases first."""
    ordered: list[Lever] = []
    for lever in chosen:
        for needed in (every[lever.base], lever) if lever.base else (lever,):
            if needed not in ordered:
                ordered.append(needed)
    return ordered


def run_dir(root: Path, lever: str, seed: int) -> Path:
    return root / lever / f"seed{seed}"


def commands(lever: Lever, seed: int, root: Path, common: tuple[str, ...]) -> list[list[str]]:
    """The commands of one lever for one seed (the base's runs already done)."""
    output = run_dir(root, lever.name, seed)
    if lever.kind in ("train", "stage2"):
        start = ()
        if lever.kind == "stage2":
            best = run_dir(root, lever.base, seed) / RunDir.BEST_CHECKPOINT
            start = (f"model.init_from={best}",)
        overrides = merged(common, (f"seed={seed}", *lever.overrides, *start))
        return [["hpa.train", f"hydra.run.dir={output}", *overrides]]
    if lever.kind == "average":
        # the sub-run is written beside the run; the job's own log goes here, without a
        # .hydra/ that hpa.compare would take for an unfinished run
        return [
            [
                "hpa.average",
                str(run_dir(root, lever.base, seed)),
                *lever.overrides,
                f"hydra.run.dir={output}",
                "hydra.output_subdir=null",
            ]
        ]
    if lever.kind == "eval":
        best = run_dir(root, lever.base, seed) / RunDir.BEST_CHECKPOINT
        return [["hpa.eval", f"ckpt_path={best}", f"hydra.run.dir={output}", *lever.overrides]]
    raise ValueError(f"unknown lever kind {lever.kind!r}")


def finished(lever: Lever, seed: int, root: Path) -> bool:
    if lever.kind == "average":
        last = int(lever.overrides[0].removeprefix("--last="))
        return RunDir(run_dir(root, lever.base, seed)).average_subrun(last).is_finished()
    return RunDir(run_dir(root, lever.name, seed)).is_finished()


def run(command: list[str], dry_run: bool) -> None:
    line = [sys.executable, "-m", *command]
    log.info("%s", " ".join(line))
    if dry_run:
        return
    result = subprocess.run(line, cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(
            f"failed ({result.returncode}): {' '.join(command)}\n{result.stderr[-3000:]}"
        )


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=REPO / "logs" / "levers")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (0,1,2)")
    parser.add_argument("--levers", default=None, help="comma-separated names (default: all)")
    parser.add_argument("--images", type=int, default=1000, help="synthetic images (1000)")
    parser.add_argument("--size", type=int, default=64, help="training image size (64)")
    parser.add_argument("--epochs", type=int, default=6, help="epochs of a run (6)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = parser.parse_args(argv)

    stage2_size = args.size * 3 // 2
    last = min(AVERAGED_EPOCHS, args.epochs)
    every = {lever.name: lever for lever in levers(last, stage2_size, args.epochs // 2 or 1)}
    names = args.levers.split(",") if args.levers else list(every)
    unknown = [name for name in names if name not in every]
    if unknown:
        parser.error(f"unknown lever(s) {unknown}; choose from {', '.join(every)}")
    common = (
        f"paths.root_dir={REPO}",
        # generated once at the largest size the levers read (the second stage's)
        f"data.synthetic.num_images={args.images}",
        f"data.synthetic.image_size={stage2_size}",
        f"data.image_size={args.size}",
        f"trainer.max_epochs={args.epochs}",
    )
    seeds = [int(seed) for seed in args.seeds.split(",")]
    for lever in with_bases([every[name] for name in names], every):
        for seed in seeds:
            if finished(lever, seed, args.root) and not args.dry_run:
                log.info("%s, seed %d: done already", lever.name, seed)
                continue
            for command in commands(lever, seed, args.root, common):
                run(command, args.dry_run)

    table = ["hpa.compare", str(args.root), "--group-seeds", "--sort", "test/f1_macro"]
    log.info("%s", " ".join([sys.executable, "-m", *table]))
    if not args.dry_run:
        subprocess.run([sys.executable, "-m", *table], cwd=REPO, check=True)


if __name__ == "__main__":
    main()
