"""Near-duplicate search: hashing throughput on real 512 px samples, matching time for 105,000
samples (the Kaggle train set plus HPAv18), and the separation of degraded copies of the real
channels from distinct images, which the threshold rests on.

    python -m benchmarks.duplicates [--samples 200] [--matching 105000] [--threads N]
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from benchmarks.common import print_table, real_sample_root, seeded_rng, shared_dir, time_it
from hpa.core.labels import CHANNELS, HPA2018
from hpa.data.cache import default_build_workers
from hpa.data.duplicates import (
    DEFAULT_THRESHOLD,
    HASH_INPUT_SIZE,
    HASH_METHOD,
    HASH_SIZE,
    channel_hash,
    compute_hashes,
    near_duplicate_pairs,
)
from hpa.data.reader import read_channel, read_labels_csv

NUM_PLANTED = 1000
"""Duplicate pairs planted among the random hashes of the matching benchmark."""


def hashing_rows(num_samples: int) -> list[tuple[str, str]]:
    cores = default_build_workers()
    rows = []
    with tempfile.TemporaryDirectory(prefix="hpa-bench-hash-") as folder:
        root = real_sample_root(Path(folder), num_samples)
        ids, _ = read_labels_csv(root / "train.csv", HPA2018)
        compute_hashes(root / "train", ids[:8], 1)  # imports and first decodes
        for workers in sorted({1, cores}):
            took = time_it(partial(compute_hashes, root / "train", ids, workers))
            per_process = num_samples / took / workers
            rows.append(
                (
                    f"{workers} process(es)",
                    f"{took:6.1f} s  {num_samples / took:6.1f} samples/s "
                    f"({per_process:.1f} per process)",
                )
            )
    return rows


def planted_hashes(num_samples: int, rng: np.random.Generator) -> tuple[np.ndarray, set]:
    """Random 16-word hash rows, NUM_PLANTED of them copies of others with 1..threshold bits
    flipped."""
    hashes = rng.integers(0, 2**64 - 1, size=(num_samples, 16), dtype=np.uint64, endpoint=True)
    rows = rng.choice(num_samples, size=2 * NUM_PLANTED, replace=False)
    planted = set()
    for source, copy in zip(rows[:NUM_PLANTED], rows[NUM_PLANTED:], strict=True):
        bits = np.unpackbits(hashes[source].view(np.uint8))
        flips = rng.choice(len(bits), size=rng.integers(1, DEFAULT_THRESHOLD + 1), replace=False)
        bits[flips] ^= 1
        hashes[copy] = np.packbits(bits).view(np.uint64)
        planted.add((min(source, copy), max(source, copy)))
    return hashes, planted


def matching_rows(num_samples: int, threads: int) -> list[tuple[str, str]]:
    hashes, planted = planted_hashes(num_samples, seeded_rng(0))
    found = {}
    took = time_it(
        lambda: found.update(
            pairs=near_duplicate_pairs(hashes, threshold=DEFAULT_THRESHOLD, num_threads=threads)
        )
    )
    pairs = found["pairs"]
    found_pairs = set(zip(pairs.first.tolist(), pairs.second.tolist(), strict=True))
    num_pairs = num_samples * (num_samples - 1) // 2
    return [
        ("samples", f"{num_samples:,} ({num_pairs:,} pairs), {threads} thread(s)"),
        ("matching time", f"{took:6.1f} s  ({num_pairs / took / 1e6:,.0f} million pairs/s)"),
        (
            "planted pairs found",
            f"{len(found_pairs & planted)} of {len(planted)}, "
            f"{len(found_pairs - planted)} other pair(s)",
        ),
    ]


def _degraded_copies(channel: np.ndarray) -> dict[str, np.ndarray]:
    def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
        encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])[1]
        return cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE)

    def brighter(image: np.ndarray, gain: float, offset: float = 0.0) -> np.ndarray:
        return np.clip(image.astype(np.float32) * gain + offset, 0, 255).astype(np.uint8)

    def resized(image: np.ndarray, size: int) -> np.ndarray:
        shrinking = size < image.shape[0]
        interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        return cv2.resize(image, (size, size), interpolation=interpolation)

    return {
        "256 px": resized(channel, 256),
        "2048 px": resized(channel, 2048),
        "JPEG q50": jpeg(channel, 50),
        "JPEG q20": jpeg(channel, 20),
        "x1.5 brighter (clipped)": brighter(channel, 1.5),
        "+40 brighter": brighter(channel, 1.0, 40),
        "gamma 0.7": (255 * (channel / 255.0) ** 0.7).astype(np.uint8),
        "300 px, x1.4+10, JPEG q60": jpeg(brighter(resized(channel, 300), 1.4, 10), 60),
    }


def separation_rows() -> list[tuple[str, str]]:
    """Per-stain distances: each real channel against its degraded copies, against the other
    real channels of its colour, and its quadrants against each other (neighbouring fields)."""
    real_channels = shared_dir() / "data/hpa2018/real_channels"
    copies: dict[str, list[int]] = {}
    distinct_files, distinct_quadrants = [], []
    with tempfile.TemporaryDirectory(prefix="hpa-bench-sep-") as folder:

        def hashed(image: np.ndarray) -> np.ndarray:
            path = Path(folder) / "channel.png"  # through the reader, as a root's files are
            cv2.imwrite(str(path), image)
            return channel_hash(read_channel(path, HASH_INPUT_SIZE))

        def distance(a: np.ndarray, b: np.ndarray) -> int:
            return int(np.bitwise_count(a ^ b).sum())

        for color in CHANNELS:
            file_hashes = []
            for path in sorted(real_channels.glob(f"*_{color}.png")):
                channel = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
                file_hashes.append(hashed(channel))
                for name, copy in _degraded_copies(channel).items():
                    copies.setdefault(name, []).append(distance(file_hashes[-1], hashed(copy)))
                half = channel.shape[0] // 2
                quadrants = [channel[:half, :half], channel[:half, half:]]
                quadrants += [channel[half:, :half], channel[half:, half:]]
                quadrant_hashes = [hashed(quadrant) for quadrant in quadrants]
                for a, b in itertools.combinations(quadrant_hashes, 2):
                    distinct_quadrants.append(distance(a, b))
            for a, b in itertools.combinations(file_hashes, 2):
                distinct_files.append(distance(a, b))
    bits = f"of {HASH_SIZE**2} bits"
    rows = [(f"copy: {name}", f"max {max(found):3d} {bits}") for name, found in copies.items()]
    all_copies = [value for found in copies.values() for value in found]
    rows += [
        ("copies, all", f"max {max(all_copies):3d}, mean {np.mean(all_copies):5.1f}"),
        (
            "distinct files (same colour)",
            f"min {min(distinct_files):3d}, mean {np.mean(distinct_files):5.1f}",
        ),
        (
            "distinct quadrants (same file)",
            f"min {min(distinct_quadrants):3d}, mean {np.mean(distinct_quadrants):5.1f}",
        ),
        (
            "threshold (sum of 4 stains)",
            f"{DEFAULT_THRESHOLD} = {DEFAULT_THRESHOLD / 4:.0f} per stain on average",
        ),
    ]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200, help="real samples to hash")
    parser.add_argument("--matching", type=int, default=105_000, help="samples to match")
    parser.add_argument("--threads", type=int, default=default_build_workers())
    args = parser.parse_args()
    print_table(
        f"duplicates: hashing ({HASH_METHOD}), {args.samples} real 512 px samples",
        hashing_rows(args.samples),
    )
    print_table(
        f"duplicates: matching random hashes with {NUM_PLANTED} planted duplicates",
        matching_rows(args.matching, args.threads),
    )
    print_table("duplicates: per-stain distances on the 48 real channels", separation_rows())


if __name__ == "__main__":
    main()
