"""The record of one training run: every epoch's validation and test probabilities and
validation loss, with the targets, so checkpoint selection and threshold policies can be judged
afterwards without retraining. One .npz file per run, written atomically, at
OUT/records/{RunKey.name}.npz."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hpa.core.io import atomic_path
from hpa.core.labels import HPA2018

RECORD_SUFFIX = ".npz"
RECORDS_DIR = "records"
_ARRAYS = ("epochs", "seconds", "val_loss", "val_probabilities", "test_probabilities")


@dataclass
class Record:
    """``val_targets``/``test_targets``: (N, 28) 0/1; ``train_label_rate``: 28 shares of the
    train split; per recorded epoch (0-based ``epochs``): ``seconds`` since the run started,
    ``val_loss`` (the run's training loss on val), (N, 28) probabilities of val and test."""

    val_targets: np.ndarray
    test_targets: np.ndarray
    train_label_rate: np.ndarray
    meta: dict = field(default_factory=dict)
    epochs: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_probabilities: list[np.ndarray] = field(default_factory=list)
    test_probabilities: list[np.ndarray] = field(default_factory=list)

    def add_epoch(self, epoch, seconds, val_loss, val_probabilities, test_probabilities) -> None:
        for name, probabilities, targets in (
            ("val", val_probabilities, self.val_targets),
            ("test", test_probabilities, self.test_targets),
        ):
            if np.shape(probabilities) != np.shape(targets):
                raise ValueError(
                    f"{name} probabilities {np.shape(probabilities)} do not match "
                    f"the targets {np.shape(targets)}"
                )
        self.epochs.append(int(epoch))
        self.seconds.append(float(seconds))
        self.val_loss.append(float(val_loss))
        self.val_probabilities.append(np.asarray(val_probabilities, dtype=np.float32))
        self.test_probabilities.append(np.asarray(test_probabilities, dtype=np.float32))

    def save(self, path: str | Path) -> None:
        arrays = {name: np.asarray(getattr(self, name)) for name in _ARRAYS}
        empty = np.zeros((0, 0, HPA2018.num_classes), dtype=np.float32)
        for name in ("val_probabilities", "test_probabilities"):
            arrays[name] = arrays[name] if len(arrays[name]) else empty
        with atomic_path(path) as temporary, temporary.open("wb") as handle:
            np.savez_compressed(
                handle,
                val_targets=self.val_targets.astype(np.uint8),
                test_targets=self.test_targets.astype(np.uint8),
                train_label_rate=self.train_label_rate.astype(np.float64),
                meta=np.array(json.dumps(self.meta)),
                **arrays,
            )


def load_record(path: str | Path) -> Record:
    with np.load(path, allow_pickle=False) as data:
        record = Record(
            val_targets=data["val_targets"],
            test_targets=data["test_targets"],
            train_label_rate=data["train_label_rate"],
            meta=json.loads(str(data["meta"])),
        )
        for name in _ARRAYS:
            values = data[name]
            setattr(record, name, list(values) if values.ndim > 1 else values.tolist())
    return record


@dataclass(frozen=True)
class RunKey:
    """What identifies one run of the benchmark, and so its record file."""

    dataset: str  # e.g. independent-n900-s256
    image_size: int
    variant: str
    seed: int
    epochs: int

    @property
    def name(self) -> str:
        return (
            f"{self.dataset}/px{self.image_size}/{self.variant}/seed{self.seed}-epochs{self.epochs}"
        )

    @classmethod
    def parse(cls, name: str) -> RunKey:
        dataset, size, variant, run = Path(name).with_suffix("").parts[-4:]
        seed, epochs = run.removeprefix("seed").split("-epochs")
        return cls(dataset, int(size.removeprefix("px")), variant, int(seed), int(epochs))


def record_path(out: Path, key: RunKey) -> Path:
    return out / RECORDS_DIR / f"{key.name}{RECORD_SUFFIX}"


def find_records(out: Path) -> list[tuple[RunKey, Path]]:
    """Every record under ``out``, with its key."""
    paths = sorted((out / RECORDS_DIR).glob(f"*/*/*/*{RECORD_SUFFIX}"))
    return [(RunKey.parse(str(path.relative_to(out / RECORDS_DIR))), path) for path in paths]
