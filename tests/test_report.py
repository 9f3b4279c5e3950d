"""`hpa.report` on a real 2-epoch run of `python -m hpa.train` (which draws the report itself)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli import SMALL_SYNTHETIC_SET, run_module
from PIL import Image

from hpa import report
from hpa.core.errors import HPAInputError
from hpa.core.labels import HPA2018
from hpa.core.metric_names import TRAIN_LOSS, VAL_F1_MACRO, VAL_F1_SAMPLES, VAL_LOSS
from hpa.core.run_dir import RunDir
from hpa.data.reader import read_sample
from hpa.plots import figures
from hpa.run import reporting as run_report

EPOCHS = 2


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("report")
    result = run_module(
        "hpa.train",
        f"hydra.run.dir={root / 'run'}",
        f"paths.data_dir={root / 'data'}",
        *SMALL_SYNTHETIC_SET,
        f"trainer.max_epochs={EPOCHS}",
        "data.num_workers=0",
        "model=cnn",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root / "run"


@pytest.fixture
def run_copy(trained_run: Path, tmp_path: Path) -> Path:
    """A copy of the run (without its last checkpoint and report) that a test may damage."""
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy, ignore=shutil.ignore_patterns("last.ckpt", "report"))
    return copy


def check_figure(path: Path, name: str) -> None:
    assert path.is_file() and path.stat().st_size > 0, path
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == figures.figure_pixel_size(name)


def test_training_draws_every_figure_and_the_markdown(trained_run: Path):
    report_dir = trained_run / RunDir.REPORT_DIR
    for name in run_report.FIGURE_TITLES:
        check_figure(report_dir / f"{name}.png", name)
    markdown = (report_dir / run_report.REPORT_FILE).read_text()
    for name, title in run_report.FIGURE_TITLES.items():
        assert f"![{title}]({name}.png)" in markdown
    assert "Not drawn" not in markdown
    for metric, value in json.loads((trained_run / "metrics.json").read_text()).items():
        assert f"| `{metric}` | {value:.4f} |" in markdown


def test_cli_redraws_the_report_of_a_run(run_copy: Path):
    assert not (run_copy / RunDir.REPORT_DIR).exists()
    assert report.main([str(run_copy)]) == 0
    for name in run_report.FIGURE_TITLES:
        check_figure(run_copy / RunDir.REPORT_DIR / f"{name}.png", name)


def test_curves_hold_one_point_per_fitted_epoch(trained_run: Path):
    per_epoch = run_report.epoch_metrics(RunDir(trained_run).metrics_csv())
    assert list(per_epoch.index) == list(range(EPOCHS))
    assert list(per_epoch.columns) == [TRAIN_LOSS, VAL_LOSS, VAL_F1_MACRO, VAL_F1_SAMPLES]
    assert per_epoch.notna().all().all()
    logged = pd.read_csv(trained_run / "csv" / "metrics.csv")
    first_val_loss = logged.loc[logged["epoch"] == 0, VAL_LOSS].dropna().iloc[0]
    assert per_epoch.loc[0, VAL_LOSS] == pytest.approx(first_val_loss)


def test_data_root_is_read_from_the_run_config(trained_run: Path):
    root = run_report.run_data_root(trained_run)
    assert root == trained_run.parent / "data" / "synthetic-n120-s64-seed0"
    assert (root / "train.csv").is_file()


def test_missing_artifacts_skip_their_figures_with_a_message(
    run_copy: Path, caplog: pytest.LogCaptureFixture
):
    shutil.rmtree(run_copy / "csv")
    (run_copy / "test_predictions.csv").unlink()
    with caplog.at_level(logging.WARNING, logger="hpa.report"):
        figures = run_report.write_report(run_copy)

    assert set(figures) == {"per_class_f1", "label_distribution"}
    for name, path in figures.items():
        check_figure(path, name)
    for name in ("training_curves", "precision_recall", "test_images"):
        assert not (run_copy / RunDir.REPORT_DIR / f"{name}.png").exists()
    assert "without the CSV logger" in caplog.text
    assert "test_predictions.csv not found" in caplog.text
    markdown = (run_copy / RunDir.REPORT_DIR / run_report.REPORT_FILE).read_text()
    assert "## Not drawn" in markdown
    assert "(`training_curves.png`): no metrics.csv" in markdown
    assert "(`precision_recall.png`): test_predictions.csv not found" in markdown


def test_a_moved_data_root_counts_the_test_split_only(
    run_copy: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    with caplog.at_level(logging.WARNING, logger="hpa.report"):
        figures = run_report.write_report(run_copy, data_root=tmp_path / "moved")
    assert "label_distribution" in figures and "test_images" not in figures
    assert "counting the test split only" in caplog.text
    assert "image directory" in caplog.text


def test_class_activation_maps_of_the_best_checkpoint(trained_run: Path):
    from hpa.integrations import cam
    from hpa.models.checkpoints import load_module

    run = RunDir(trained_run)
    figure = run_report.class_activation_maps_figure(run, run_report.run_data_root(run))
    shown = run.test_predictions()["Id"].head(run_report.NUM_CAM_IMAGES).tolist()
    rows = np.asarray(figure.axes).reshape(figures.CAM_GRID_ROWS, figures.CAM_GRID_COLUMNS)
    module = load_module(run.best_checkpoint)
    images = np.stack(
        [read_sample(run_report.run_data_root(run) / "train", i, run.image_size()) for i in shown]
    )
    predicted = cam.predicted_class_ids(module, cam.class_probabilities(module, images))
    for row, sample_id, class_ids in zip(rows, shown, predicted, strict=True):
        assert row[0].get_title().startswith(sample_id[:13])
        drawn = [axes.get_title().split("\n")[0] for axes in row[1:] if axes.get_title()]
        assert drawn == [HPA2018.class_names[i] for i in class_ids[: len(row) - 1]]
        if len(class_ids) > len(row) - 1:
            assert f"+{len(class_ids) - len(row) + 1} more classes" in row[0].get_title()


def test_without_the_best_checkpoint_the_maps_are_skipped(run_copy: Path):
    (run_copy / RunDir.BEST_CHECKPOINT).unlink()
    figures_drawn = run_report.write_report(run_copy)
    assert "class_activation_maps" not in figures_drawn and "test_images" in figures_drawn
    markdown = (run_copy / RunDir.REPORT_DIR / run_report.REPORT_FILE).read_text()
    assert "(`class_activation_maps.png`): checkpoints/best.ckpt not found" in markdown


def test_a_checkpoint_the_maps_cannot_use_skips_them(run_copy: Path):
    (run_copy / RunDir.BEST_CHECKPOINT).write_bytes(b"not a checkpoint")
    figures_drawn = run_report.write_report(run_copy)
    assert "class_activation_maps" not in figures_drawn and "test_images" in figures_drawn
    markdown = (run_copy / RunDir.REPORT_DIR / run_report.REPORT_FILE).read_text()
    assert "(`class_activation_maps.png`): " in markdown
    assert "best.ckpt is not a readable PyTorch checkpoint" in markdown


def test_a_run_without_metrics_is_refused(run_copy: Path):
    (run_copy / "metrics.json").unlink()
    with pytest.raises(HPAInputError, match="metrics.json not found"):
        run_report.write_report(run_copy)
    with pytest.raises(SystemExit) as exit_info:
        report.main([str(run_copy)])
    assert exit_info.value.code == 2


def test_figures_go_to_an_offline_wandb_run(trained_run: Path, tmp_path: Path):
    from pytorch_lightning.loggers import CSVLogger, WandbLogger

    figures = {
        name: trained_run / RunDir.REPORT_DIR / f"{name}.png" for name in run_report.FIGURE_TITLES
    }
    wandb_logger = WandbLogger(project="hpa-test", save_dir=str(tmp_path), offline=True)
    csv_logger = CSVLogger(str(tmp_path / "csv"))
    try:
        run_report.log_to_wandb([csv_logger, wandb_logger], figures)
        run_dir = Path(wandb_logger.experiment.dir).parent
    finally:
        wandb_logger.experiment.finish()
    media = sorted((run_dir / "files" / "media" / "images" / "report").glob("*.png"))
    assert {path.name.rsplit("_", 2)[0] for path in media} == set(run_report.FIGURE_TITLES)
    assert all(np.asarray(Image.open(path)).size > 0 for path in media)
