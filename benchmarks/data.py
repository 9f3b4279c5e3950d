"""Samples per second of one process at 256 px with the training augmentation: the naive loader
(PIL decode + resize of the four PNGs of each sample, as in the Kaggle kernels) against ours
(rows of the packed cache), on real 512x512 competition PNGs.

    python -m benchmarks.data [--samples 3000] [--naive-samples 240] [--size 256] [--rounds 3]

The two loaders are measured in alternating rounds and each figure is the median of its rounds,
so a slow spell of a shared machine weighs on both sides of the ratio alike.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from benchmarks.common import augment_config, consume, print_table, real_sample_root, time_it
from hpa.core.labels import CHANNELS, HPA2018
from hpa.data.cache import ensure_cache
from hpa.data.dataset import RGBYDataset, collate_samples
from hpa.data.reader import read_labels_csv
from hpa.data.transforms import build_augmentation, interleave_channels


class NaivePILDataset(Dataset):
    """What public HPA kernels do per sample: open four PNGs with PIL, resize, stack."""

    def __init__(self, image_dir: Path, ids: np.ndarray, size: int, augmentation) -> None:
        self.image_dir, self.ids, self.size, self.augmentation = image_dir, ids, size, augmentation

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict:
        planes = []
        for color in CHANNELS:
            with Image.open(self.image_dir / f"{self.ids[index]}_{color}.png") as image:
                resized = image.convert("L").resize((self.size, self.size), Image.BILINEAR)
                planes.append(np.asarray(resized))
        image = self.augmentation(image=interleave_channels(np.stack(planes)))["image"]
        return {"image": torch.from_numpy(image).permute(2, 0, 1), "index": index}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=3000, help="samples in the cache")
    parser.add_argument("--naive-samples", type=int, default=240, help="samples decoded naively")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per loader")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one loader process; the figures are per process
    cv2.setNumThreads(1)

    with tempfile.TemporaryDirectory(prefix="hpa-bench-data-") as folder:
        root = real_sample_root(Path(folder), args.samples)
        ids, _ = read_labels_csv(root / "train.csv", HPA2018)
        augmentation = build_augmentation(augment_config("basic"))
        augmentation.set_random_seed(0)

        build_seconds = time_it(lambda: ensure_cache(root / "train", ids, args.size))
        cache = ensure_cache(root / "train", ids, args.size)
        naive = NaivePILDataset(root / "train", ids[: args.naive_samples], args.size, augmentation)
        cached = RGBYDataset(root / "train", ids, None, args.size, augmentation, cache=cache)
        plain = RGBYDataset(root / "train", ids, None, args.size, cache=cache)
        rounds = [
            [measure(dataset) for dataset in (naive, cached, plain)] for _ in range(args.rounds)
        ]
        naive_rate, cached_rate, unaugmented_rate = np.median(rounds, axis=0)
        round_ratios = [cached_round / naive_round for naive_round, cached_round, _ in rounds]

    print_table(
        f"data: samples/s of one process at {args.size} px, basic augmentation, real 512 px PNGs"
        f" (median of {args.rounds} alternating rounds)",
        [
            (f"(a) naive PIL decode + resize ({len(naive)} samples)", f"{naive_rate:8.1f}"),
            (f"(b) packed cache ({len(cached)} samples)", f"{cached_rate:8.1f}"),
            ("ratio (b) / (a)", f"{cached_rate / naive_rate:8.1f}x   (target >= 30x)"),
            ("ratio in each round", "  ".join(f"{ratio:.1f}x" for ratio in round_ratios)),
            ("packed cache without augmentation", f"{unaugmented_rate:8.1f}"),
            (
                f"cache build, {len(ids)} samples, all cores",
                f"{build_seconds:8.1f} s ({len(ids) / build_seconds:.0f} samples/s)",
            ),
        ],
    )


def measure(dataset: Dataset, batch_size: int = 32) -> float:
    """Samples per second of one pass over ``dataset`` in this process (no workers)."""
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=0, collate_fn=collate_samples)
    samples = 0

    def run() -> None:
        nonlocal samples
        samples = consume(loader)

    seconds = time_it(run)
    return samples / seconds


if __name__ == "__main__":
    main()
