"""Cache build throughput (real 512x512 competition PNGs, decoded and resized to 256 px) with one
process and with all cores.

    python -m benchmarks.cache [--samples 400] [--size 256]
"""

from __future__ import annotations

import argparse
import tempfile
from functools import partial
from pathlib import Path

from benchmarks.common import print_table, real_sample_root, time_it
from hpa.core.labels import HPA2018
from hpa.data.cache import CacheFiles, build_cache, default_build_workers
from hpa.data.reader import read_labels_csv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=400)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    cores = default_build_workers()
    seconds = {}
    with tempfile.TemporaryDirectory(prefix="hpa-bench-cache-") as folder:
        root = real_sample_root(Path(folder), args.samples)
        ids, _ = read_labels_csv(root / "train.csv", HPA2018)
        for workers in (1, cores):
            files = CacheFiles.at(Path(folder) / "cache", f"w{workers}")
            build = partial(build_cache, files, root / "train", ids, args.size, workers)
            seconds[workers] = time_it(build)
    rows = [
        (f"{workers} process(es)", f"{took:6.1f} s  {args.samples / took:6.1f} samples/s")
        for workers, took in seconds.items()
    ]
    rows.append(("speed-up", f"{seconds[1] / seconds[cores]:6.2f}x on {cores} cores"))
    print_table(f"cache: build throughput, {args.samples} real samples at {args.size} px", rows)


if __name__ == "__main__":
    main()
