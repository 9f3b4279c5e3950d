"""Cell segmentation speed (watershed provider) on synthetic HPA-like images: seconds per image on
one core at 512, 2048 and 3072 px, and images per second of the mask cache's process pool (PNG
decoding, segmentation and mask writing) with one process and with all cores.

    python -m benchmarks.segmentation [--images 16] [--size 2048] [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
from functools import partial
from pathlib import Path

import cv2

from benchmarks.common import print_table, time_it
from hpa.core.labels import CHANNELS
from hpa.data.cache import default_build_workers
from hpa.data.cells import MaskCache, WatershedSegmenter
from hpa.data.cells.synthetic import draw_cells


def seconds_per_image(side: int, segmenter: WatershedSegmenter, repeats: int) -> float:
    """The best of ``repeats`` timings of one in-memory image (the decoding is left out)."""
    image, _ = draw_cells(side, seed=0)
    segmenter.segment(image)  # warm-up: imports, allocator
    return min(time_it(lambda: segmenter.segment(image)) for _ in range(repeats))


def write_images(image_dir: Path, count: int, side: int) -> list[str]:
    """``count`` synthetic samples as Kaggle-style 8-bit channel PNGs (4 distinct fields, drawn
    once each: drawing a 2048 px field takes longer than segmenting it)."""
    image_dir.mkdir(parents=True)
    fields = [draw_cells(side, seed=seed)[0] for seed in range(min(count, 4))]
    ids = [f"synth{index:04d}" for index in range(count)]
    for index, sample_id in enumerate(ids):
        image = fields[index % len(fields)]
        for color, plane in zip(CHANNELS, image, strict=True):
            cv2.imwrite(str(image_dir / f"{sample_id}_{color}.png"), plane)
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16, help="images of the pool benchmark")
    parser.add_argument("--size", type=int, default=2048, help="their side in px")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    cv2.setNumThreads(1)  # one core: scikit-image and SciPy are single-threaded, OpenCV is not
    default, native = WatershedSegmenter(), WatershedSegmenter(max_side=None)
    rows = [
        (f"{side} px{note}", f"{seconds_per_image(side, segmenter, args.repeats):6.2f} s")
        for side, segmenter, note in [
            (512, default, ""),
            (2048, default, f" (segmented at max_side={default.max_side})"),
            (2048, native, " (max_side=null: native size)"),
            (3072, default, f" (segmented at max_side={default.max_side})"),
        ]
    ]
    print_table("segmentation: seconds per image on one core (watershed, in memory)", rows)

    cores = default_build_workers()
    seconds = {}
    with tempfile.TemporaryDirectory(prefix="hpa-bench-segment-") as folder:
        image_dir = Path(folder) / "images"
        ids = write_images(image_dir, args.images, args.size)
        for processes in sorted({1, cores}):
            cache = MaskCache(Path(folder) / f"cache-p{processes}", default)
            seconds[processes] = time_it(partial(cache.ensure_masks, image_dir, ids, processes))
    rows = [
        (f"{processes} process(es)", f"{took:6.1f} s  {args.images / took:6.2f} images/s")
        for processes, took in seconds.items()
    ]
    if cores > 1:
        rows.append(("speed-up", f"{seconds[1] / seconds[cores]:6.2f}x on {cores} cores"))
    print_table(
        f"mask cache: {args.images} synthetic {args.size} px images, PNG in, mask PNG out", rows
    )


if __name__ == "__main__":
    main()
