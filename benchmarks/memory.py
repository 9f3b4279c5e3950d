"""Peak resident memory of a training process (``python -m hpa.train``, one epoch, cache on) on
synthetic sets of N and 4N samples: memory should not grow with the data.

    python -m benchmarks.memory [--samples 400] [--size 64]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import psutil

from benchmarks.common import REPO, print_table


def peak_memory(arguments: list[str]) -> tuple[float, float]:
    """(peak RSS of the largest process, peak sampled RSS of the whole process tree), in MiB."""
    log = tempfile.TemporaryFile()  # not a pipe: a full pipe would block the training process
    process = subprocess.Popen(arguments, cwd=REPO, stdout=subprocess.DEVNULL, stderr=log)
    watched = psutil.Process(process.pid)
    tree_peak, usage = 0, None
    while usage is None:
        try:
            members = [watched, *watched.children(recursive=True)]
            tree_peak = max(tree_peak, sum(member.memory_info().rss for member in members))
        except psutil.Error:
            pass
        # wait4 (not Popen.wait) returns the exited process's own resource usage
        pid, status, finished_usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            usage, process.returncode = finished_usage, os.waitstatus_to_exitcode(status)
        else:
            time.sleep(0.1)
    if process.returncode:
        log.seek(0)
        raise SystemExit(f"training failed:\n{log.read().decode()[-3000:]}")
    return usage.ru_maxrss / 1024, tree_peak / 2**20


def train_command(root: str, num_images: int, size: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "hpa.train",
        f"paths.root_dir={root}",
        f"hydra.run.dir={root}/logs/{num_images}",
        f"data.synthetic.num_images={num_images}",
        f"data.synthetic.image_size={size}",
        f"data.image_size={size}",
        "data.cache=true",
        "trainer.max_epochs=1",
        "logger=none",
        "callbacks=none",
        "model.thresholds=fixed",
        "test=false",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=400, help="N (the larger set has 4N)")
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="hpa-bench-memory-") as root:
        for num_images in (args.samples, 4 * args.samples):
            command = train_command(root, num_images, args.size)
            # generate the set first, so that its generation is not measured
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "hpa.data.synthetic",
                    f"{root}/data/synthetic-n{num_images}-s{args.size}-seed0",
                    "--n",
                    str(num_images),
                    "--size",
                    str(args.size),
                    "--no-progress",
                ],
                cwd=REPO,
                check=True,
                capture_output=True,
            )
            results[num_images] = peak_memory(command)
    (small_largest, small_tree), (large_largest, large_tree) = results.values()
    print_table(
        f"memory: peak RSS of python -m hpa.train (1 epoch, {args.size} px, cached)",
        [
            (
                f"N = {args.samples}: largest process / whole tree",
                f"{small_largest:7.0f} / {small_tree:7.0f} MiB",
            ),
            (
                f"4N = {4 * args.samples}: largest process / whole tree",
                f"{large_largest:7.0f} / {large_tree:7.0f} MiB",
            ),
            (
                "growth, largest process",
                f"{100 * (large_largest / small_largest - 1):+7.1f} %   (target < 10%)",
            ),
            ("growth, whole tree", f"{100 * (large_tree / small_tree - 1):+7.1f} %"),
        ],
    )


if __name__ == "__main__":
    main()
