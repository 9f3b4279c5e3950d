"""The plain PyTorch loop of issue 16, on a saved split: timm resnet18 (4 channels, from
scratch), images scaled by 1/255 and held in memory, AdamW (lr 1e-3, weight decay 1e-4) at a
constant rate, batches of 32 (a last batch of one image is skipped), one of the 8 symmetries of
the square (D4) drawn for each image (a horizontal flip, a vertical flip and a transpose, each
with p = 0.5, from the loop's seeded generator), BCE. Every epoch's val and test probabilities
and val loss go to a Record, with the optimizer steps of an epoch (``meta["steps_per_epoch"]``);
the epoch kept (best val macro F1 at 0.5) and the thresholds are chosen afterwards (``report``).

    python -m benchmarks.quality.plain ROOT SPLIT.csv RECORD.npz --seed 0 --epochs 12

``PlainOptions`` adds one hpa ingredient at a time (normalisation, cosine schedule, ...).
``--flips batch`` is the loop before 2026-12-07 (records made before then used it): one random
horizontal and one random vertical flip of the whole batch (4 symmetries, the same for every
image of a batch); ``--flips batch_d4`` adds a random transpose of the whole batch (the former
``--dihedral``).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import timm
import torch
from tqdm import tqdm

from benchmarks.quality.record import Record
from hpa.core.labels import HPA2018
from hpa.data.reader import read_labels_csv, read_sample
from hpa.data.split import load_split

log = logging.getLogger(__name__)

FLIPS = ("image", "batch", "batch_d4")
"""``PlainOptions.flips``: ``image`` one of the 8 D4 symmetries per image (hpa's
``augment=flips``), ``batch`` one random horizontal and one random vertical flip of the whole batch
(the loop before 2026-12-07), ``batch_d4`` those and a random transpose of the whole batch."""


@dataclass(frozen=True)
class PlainOptions:
    image_size: int = 128
    epochs: int = 12
    batch_size: int = 32
    normalize: bool = False  # hpa: per-channel mean and std of the train split
    cosine: bool = False  # hpa: cosine decay of the learning rate over the epochs
    flips: str = "image"  # FLIPS: per image (as hpa) or per batch (the loop before 2026-12-07)
    channels_last: bool = False  # hpa: channels-last memory format
    drop_rate: float = 0.0  # dropout before the classifier

    def __post_init__(self) -> None:
        if self.flips not in FLIPS:
            raise ValueError(
                f"PlainOptions.flips={self.flips!r}: choose one of {', '.join(FLIPS)} (image: one "
                "of the 8 D4 symmetries per image; batch: a random horizontal and vertical flip "
                "of the whole batch; batch_d4: those and a random transpose of the whole batch)"
            )


def flip_batch(images: torch.Tensor, flips: str, generator: torch.Generator) -> torch.Tensor:
    """The random symmetries of a training batch (B, C, S, S), drawn from ``generator`` (``FLIPS``).

    ``image``: a horizontal flip, a vertical flip and a transpose, each with p = 0.5 and drawn for
    each image, so each image gets one of the 8 symmetries of the square, uniformly. ``batch`` and
    ``batch_d4`` draw once for the whole batch, in the order (and with the draws) of the loop
    before 2026-12-07, so those runs repeat.
    """
    if flips == "image":
        masks = (torch.rand(3, len(images), generator=generator) < 0.5).view(3, -1, 1, 1, 1)
        images = torch.where(masks[0], images.flip(3), images)
        images = torch.where(masks[1], images.flip(2), images)
        return torch.where(masks[2], images.transpose(2, 3), images)
    if flips not in FLIPS:
        raise ValueError(f"flips={flips!r}: choose one of {', '.join(FLIPS)}")
    if torch.rand(1, generator=generator) < 0.5:
        images = images.flip(3)
    if torch.rand(1, generator=generator) < 0.5:
        images = images.flip(2)
    if flips == "batch_d4" and torch.rand(1, generator=generator) < 0.5:
        images = images.transpose(2, 3)
    return images


def load_splits(root: Path, split_file: Path, image_size: int) -> dict[str, tuple]:
    """{"train"|"val"|"test": (uint8 images N x 4 x S x S, float targets N x 28, ids)}."""
    ids, labels = read_labels_csv(root / "train.csv", HPA2018)
    assignment = load_split(split_file, ids)
    images = np.stack(
        [read_sample(root / "train", i, image_size) for i in tqdm(ids, desc="decode", unit="img")]
    )
    return {
        name: (torch.from_numpy(images[rows]), torch.from_numpy(labels[rows]).float(), ids[rows])
        for name in ("train", "val", "test")
        for rows in [assignment == name]
    }


def train_plain(splits: dict, seed: int, options: PlainOptions, path: Path | None = None) -> Record:
    """Train on ``splits`` (``load_splits``); the Record of every epoch, also saved to ``path``
    after each epoch when given."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = timm.create_model(
        "resnet18",
        pretrained=False,
        in_chans=4,
        num_classes=HPA2018.num_classes,
        drop_rate=options.drop_rate,
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, options.epochs)
    criterion = torch.nn.BCEWithLogitsLoss()
    train_x, train_y, _ = splits["train"]
    val_x, val_y, val_ids = splits["val"]
    test_x, test_y, test_ids = splits["test"]
    mean, std = torch.zeros(1, 4, 1, 1), torch.ones(1, 4, 1, 1)
    if options.normalize:
        pixels = train_x.float().div(255).transpose(0, 1).reshape(4, -1)
        mean, std = pixels.mean(dim=1).view(1, 4, 1, 1), pixels.std(dim=1).view(1, 4, 1, 1)
    memory_format = torch.channels_last if options.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)

    def scaled(images: torch.Tensor) -> torch.Tensor:
        return ((images.float() / 255 - mean) / std).contiguous(memory_format=memory_format)

    def predict(images: torch.Tensor, targets: torch.Tensor) -> tuple[np.ndarray, float]:
        model.eval()
        with torch.no_grad():
            logits = torch.cat(
                [model(scaled(images[i : i + 64])) for i in range(0, len(images), 64)]
            )
        return torch.sigmoid(logits).numpy(), float(criterion(logits, targets))

    record = Record(
        val_y.numpy(),
        test_y.numpy(),
        train_y.mean(dim=0).numpy(),
        meta={
            "val_ids": val_ids.tolist(),
            "test_ids": test_ids.tolist(),
            "options": dataclasses.asdict(options),
        },
    )
    started = time.perf_counter()
    for epoch in range(options.epochs):
        model.train()
        order = torch.randperm(len(train_x), generator=generator)
        steps = 0
        for start in range(0, len(order), options.batch_size):
            rows = order[start : start + options.batch_size]
            if len(rows) < 2:  # batch norm needs two images
                continue
            images = flip_batch(scaled(train_x[rows]), options.flips, generator)
            if options.flips == "image":  # torch.where's output may lose the memory format
                images = images.contiguous(memory_format=memory_format)
            loss = criterion(model(images), train_y[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
        record.meta.setdefault("steps_per_epoch", steps)  # the same every epoch
        if options.cosine:
            schedule.step()
        val_probabilities, val_loss = predict(val_x, val_y)
        test_probabilities, _ = predict(test_x, test_y)
        record.add_epoch(
            epoch, time.perf_counter() - started, val_loss, val_probabilities, test_probabilities
        )
        log.info("epoch %d: val loss %.4f, %.0f s", epoch, val_loss, time.perf_counter() - started)
        if path is not None:
            record.save(path)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="Kaggle-layout data folder")
    parser.add_argument("split", type=Path, help="split.csv (Id,split)")
    parser.add_argument("record", type=Path, help="the .npz record to write")
    parser.add_argument("--seed", type=int, default=0)
    for option in dataclasses.fields(PlainOptions):
        flag = "--" + option.name.replace("_", "-")
        if option.type == "bool":
            parser.add_argument(flag, action="store_true")
        elif option.name == "flips":
            parser.add_argument(flag, choices=FLIPS, default=option.default)
        else:
            parser.add_argument(flag, type=type(option.default), default=option.default)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    options = PlainOptions(
        **{f.name: getattr(args, f.name) for f in dataclasses.fields(PlainOptions)}
    )
    splits = load_splits(args.root, args.split, options.image_size)
    train_plain(splits, args.seed, options, args.record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
