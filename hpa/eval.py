"""Evaluate a checkpoint on the test split of its run: ``python -m hpa.eval ckpt_path=PATH``.

Writes ``metrics.json``, ``test_predictions.csv`` and ``test_per_class.csv`` (precision, recall,
F1 and support per class) into its own run directory and prints the per-class table.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from hpa.artifacts import write_test_artifacts
from hpa.data.datamodule import HPADataModule
from hpa.data.validate import write_skipped_images
from hpa.errors import HPAInputError, exit_on_input_error
from hpa.io import write_json
from hpa.models.module import HPAModule, load_module

log = logging.getLogger(__name__)


def run_dir_of(checkpoint_path: Path) -> Path:
    """``RUN/checkpoints/best.ckpt`` -> ``RUN``."""
    return checkpoint_path.resolve().parent.parent


def _run_data_config(run_dir: Path) -> DictConfig:
    """The data config a training run used, resolved in the context of that run's config."""
    config_path = run_dir / ".hydra" / "config.yaml"
    if not config_path.is_file():
        raise HPAInputError(
            f"{config_path} not found: pass data=... (and split_file=...) for a checkpoint "
            "outside its run directory"
        )
    run_cfg = OmegaConf.load(config_path)
    context = OmegaConf.create(
        {"paths": run_cfg.paths, "seed": run_cfg.get("seed"), "data": run_cfg.data}
    )
    OmegaConf.resolve(context)
    return context.data


def build_eval_datamodule(cfg: DictConfig, model: HPAModule, run_dir: Path) -> HPADataModule:
    data_cfg = cfg.data if cfg.get("data") else _run_data_config(run_dir)
    split_file = cfg.get("split_file") or run_dir / "split.csv"
    overrides = {
        "split_file": str(split_file),
        "oversample": False,
        # the model normalises with the statistics in its checkpoint; none to compute here
        "normalize": {
            "mean": model.channel_mean.flatten().tolist(),
            "std": model.channel_std.flatten().tolist(),
        },
    }
    for key in ("batch_size", "num_workers"):
        if cfg.get(key) is not None:
            overrides[key] = cfg[key]
    data_cfg = OmegaConf.merge(data_cfg, overrides)
    return instantiate(data_cfg, augment=None, _recursive_=False, _convert_="all")


def evaluate(cfg: DictConfig) -> dict[str, float]:
    checkpoint_path = Path(cfg.ckpt_path)
    if not checkpoint_path.is_file():
        raise HPAInputError(f"checkpoint {checkpoint_path} does not exist")
    output_dir = Path(cfg.paths.output_dir)
    model = load_module(checkpoint_path)
    datamodule = build_eval_datamodule(cfg, model, run_dir_of(checkpoint_path))
    datamodule.prepare_data()
    datamodule.setup("test")
    write_skipped_images(output_dir, datamodule.skipped_images)

    trainer = pl.Trainer(**cfg.trainer, logger=False, enable_checkpointing=False)
    results = trainer.test(model, datamodule=datamodule)[0]
    final_metrics = {name: float(value) for name, value in sorted(results.items())}
    write_json(output_dir / "metrics.json", final_metrics)
    _, report = write_test_artifacts(output_dir, model, datamodule.datasets["test"])
    _print_report(report, final_metrics)
    return final_metrics


def _print_report(report, final_metrics: dict[str, float]) -> None:
    table = Table(title="test split, per class")
    for column in ("class", "precision", "recall", "F1", "support"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for row in report.itertuples():
        table.add_row(
            f"{row.class_id:2d} {row.class_name}",
            f"{row.precision:.3f}",
            f"{row.recall:.3f}",
            f"{row.f1:.3f}",
            str(row.support),
        )
    console = Console()
    console.print(table)
    for name in ("test/f1_macro", "test/f1_samples"):
        console.print(f"{name}: {final_metrics.get(name, float('nan')):.4f}")


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    with exit_on_input_error():
        evaluate(cfg)


if __name__ == "__main__":
    main()
