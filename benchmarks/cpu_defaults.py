"""Which CPU defaults train fastest here: channels_last or not, torch threads, DataLoader workers.
Training steps of the default model (resnet18, 128 px, batch 32), settings interleaved.

    python -m benchmarks.cpu_defaults [--steps 4] [--rounds 2]
"""

from __future__ import annotations

import argparse
import itertools
import os

import torch

from benchmarks.common import print_table, time_it
from hpa.models.module import HPAModule


def step_seconds(channels_last: bool, threads: int, steps: int, batch: dict) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = HPAModule("resnet18", channels_last=channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def train_step() -> None:
        loss = model.criterion(model(batch["image"]), batch["target"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    train_step()  # warm-up
    return time_it(lambda: [train_step() for _ in range(steps)]) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    shape = (args.batch_size, 4, args.size, args.size)
    batch = {
        "image": torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator),
        "target": torch.randint(0, 2, (args.batch_size, 28), generator=generator).float(),
    }
    cores = len(os.sched_getaffinity(0))
    settings = list(itertools.product((False, True), sorted({1, cores})))
    best = {setting: float("inf") for setting in settings}
    for _ in range(args.rounds):
        for setting in settings:
            best[setting] = min(best[setting], step_seconds(*setting, args.steps, batch))
    fastest = min(best.values())
    rows = [
        (
            f"channels_last={channels_last!s:<5} threads={threads}",
            f"{best[(channels_last, threads)]:6.2f} s/step  ({args.batch_size / best[(channels_last, threads)]:5.1f} images/s)"
            + ("  <- fastest" if best[(channels_last, threads)] == fastest else ""),
        )
        for channels_last, threads in settings
    ]
    print_table(
        f"cpu defaults: resnet18 training step, {args.size} px, batch {args.batch_size}", rows
    )


if __name__ == "__main__":
    main()
