"""What the benchmarks share: where the real competition files are, test sets built from them,
the default configs, and how figures are printed."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from hpa.core.labels import CHANNELS
from hpa.data.synthetic import ensure_dataset

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """``$HPA_SHARED``, else ``<repo>/../shared`` (the main checkout), else ``/work/shared``."""
    candidates = [os.environ.get("HPA_SHARED"), REPO.parent / "shared", "/work/shared"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "data/hpa2018/real_channels").is_dir():
            return Path(candidate)
    raise SystemExit(
        "real competition PNGs not found: set HPA_SHARED to the folder holding "
        "data/hpa2018/real_channels"
    )


def real_sample_root(root: Path, num_samples: int) -> Path:
    """A Kaggle-layout folder of ``num_samples`` 4-channel samples, each channel a link to one of
    the 48 real 512x512 competition PNGs (12 per colour), combined so that neighbouring samples
    differ. A decoding fixture: the channels of a sample come from different cells."""
    real_channels = shared_dir() / "data/hpa2018/real_channels"
    files = {color: sorted(real_channels.glob(f"*_{color}.png")) for color in CHANNELS}
    image_dir = root / "train"
    image_dir.mkdir(parents=True, exist_ok=True)
    ids = [f"real{index:05d}" for index in range(num_samples)]
    for index, sample_id in enumerate(ids):
        for shift, color in enumerate(CHANNELS):
            choices = files[color]
            source = choices[(index + shift * (index // len(choices))) % len(choices)]
            link = image_dir / f"{sample_id}_{color}.png"
            if not link.exists():
                link.symlink_to(source)
    pd.DataFrame({"Id": ids, "Target": "0"}).to_csv(root / "train.csv", index=False)
    return root


def merged(*override_lists: tuple[str, ...]) -> list[str]:
    """The overrides of all lists, a later value of a key replacing an earlier one (Hydra refuses
    a key given twice)."""
    by_key: dict[str, str] = {}
    for overrides in override_lists:
        for override in overrides:
            by_key[override.split("=", 1)[0]] = override
    return list(by_key.values())


def train_config(*overrides: str) -> DictConfig:
    """The composed ``hpa.train`` config (what ``python -m hpa.train OVERRIDES`` runs from the
    repository root), its run directory under ``logs/bench``."""
    root = os.environ.get("HPA_ROOT", str(REPO))
    paths = [f"paths.root_dir={root}", f"paths.output_dir={root}/logs/bench"]
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=[*paths, *overrides])


def synthetic_default_root(cfg: DictConfig) -> Path:
    """The synthetic set of ``cfg.data`` (generated once, as ``hpa.train`` does)."""
    return ensure_dataset(cfg.data.root, **cfg.data.synthetic)


def augment_config(name: str = "basic") -> dict:
    return OmegaConf.to_container(OmegaConf.load(REPO / f"conf/augment/{name}.yaml"))


def time_it(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def consume(batches: Iterable) -> int:
    """Iterate a loader to the end; the number of samples it gave."""
    return sum(len(batch["image"]) for batch in batches)


def print_table(title: str, rows: list[tuple[str, str]]) -> None:
    width = max(len(label) for label, _ in rows)
    print(f"\n== {title}")
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")


def seeded_rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)
