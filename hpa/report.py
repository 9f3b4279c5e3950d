"""Figures of one finished training run: ``python -m hpa.report RUN_DIR [--data-root DIR]``.

Writes into ``RUN_DIR/report/``:

    training_curves.png     train and val loss, val macro and sample F1 per epoch (csv/metrics.csv)
    per_class_f1.png        test F1 of each class, with its support (test_per_class.csv)
    precision_recall.png    one precision-recall curve per class on the test split
                            (test_predictions.csv)
    label_distribution.png  images per class in train / val / test, log scale (split.csv and the
                            labels of the run's data root)
    test_images.png         test images as RGBY composites with true and predicted classes
    report.md               the metrics of metrics.json and the figures above

A run without ``metrics.json`` is refused (HPAInputError). A figure whose input is missing (no
CSV logger, no test split, data root moved) is skipped with a warning and listed in report.md.
The plotting functions take plain tables and return matplotlib Figures, so notebooks reuse them.
Figures are drawn with the Agg canvas, without pyplot, at a fixed size and dpi.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import textwrap
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from sklearn.metrics import average_precision_score, precision_recall_curve

from hpa.data.reader import read_labels_csv, read_sample
from hpa.errors import HPAInputError, exit_on_input_error
from hpa.evaluation import metrics
from hpa.evaluation.thresholds import binarize, load_thresholds
from hpa.io import write_atomic, write_bytes
from hpa.labels import CLASS_NAMES, NUM_CLASSES, targets_to_matrix
from hpa.plots.rgby import class_names_of, rgby_composite

log = logging.getLogger(__name__)

REPORT_DIR = "report"
REPORT_FILE = "report.md"
DPI = 100
FIGURES: dict[str, tuple[str, tuple[float, float]]] = {
    "training_curves": ("Training curves", (10.0, 4.0)),
    "per_class_f1": ("Test F1 per class", (8.0, 9.0)),
    "precision_recall": ("Precision-recall curves on the test split", (14.0, 16.0)),
    "label_distribution": ("Images per class in each split", (12.0, 5.5)),
    "test_images": ("Test images: true and predicted classes", (12.0, 13.0)),
}
"""Figure name -> (title in report.md, size in inches). Each PNG is exactly size x DPI pixels."""
NUM_TEST_IMAGES = 16
SPLITS = ("train", "val", "test")


class SkipFigure(Exception):
    """An input of one figure is missing: the figure is left out, with this reason."""


def figure_pixel_size(name: str) -> tuple[int, int]:
    """(width, height) in pixels of the PNG of figure ``name``."""
    width, height = FIGURES[name][1]
    return round(width * DPI), round(height * DPI)


def new_figure(name: str, layout: str | None = "constrained") -> Figure:
    return Figure(figsize=FIGURES[name][1], dpi=DPI, layout=layout)


def figure_png(figure: Figure) -> bytes:
    """``figure`` drawn as PNG bytes with the Agg canvas (fixed dpi, no tight bounding box)."""
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return buffer.getvalue()


def save_figure(figure: Figure, path: str | Path) -> None:
    """Write ``figure`` as a PNG atomically."""
    write_bytes(path, figure_png(figure))


# --------------------------------------------------------------------------------------------
# Plots of plain tables (also used by the notebooks)
# --------------------------------------------------------------------------------------------


def epoch_metrics(metrics_csv: str | Path) -> pd.DataFrame:
    """Per fitted epoch: train loss, val loss, val macro F1, val sample F1 from a CSVLogger file.

    Rows logged after fitting (the final validation and test of the best checkpoint) carry no
    train loss and are left out.
    """
    logged = pd.read_csv(metrics_csv)
    train_loss = next(
        (c for c in (f"{metrics.TRAIN_LOSS}_epoch", metrics.TRAIN_LOSS) if c in logged), None
    )
    if "epoch" not in logged or train_loss is None:
        raise SkipFigure(f"{metrics_csv} has no epoch-level {metrics.TRAIN_LOSS}")
    columns = {
        train_loss: metrics.TRAIN_LOSS,
        metrics.VAL_LOSS: metrics.VAL_LOSS,
        metrics.VAL_F1_MACRO: metrics.VAL_F1_MACRO,
        metrics.VAL_F1_SAMPLES: metrics.VAL_F1_SAMPLES,
    }
    present = [column for column in columns if column in logged]
    per_epoch = logged.dropna(subset=["epoch"]).groupby("epoch")[present].last()
    per_epoch = per_epoch.rename(columns=columns).dropna(subset=[metrics.TRAIN_LOSS])
    per_epoch.index = per_epoch.index.astype(int)
    return per_epoch.reindex(columns=list(columns.values()))


def plot_training_curves(per_epoch: pd.DataFrame) -> Figure:
    """Losses (left) and validation F1 (right) per epoch, from ``epoch_metrics``."""
    figure = new_figure("training_curves")
    loss_axes, f1_axes = figure.subplots(1, 2)
    for name, axes in (
        (metrics.TRAIN_LOSS, loss_axes),
        (metrics.VAL_LOSS, loss_axes),
        (metrics.VAL_F1_MACRO, f1_axes),
        (metrics.VAL_F1_SAMPLES, f1_axes),
    ):
        values = per_epoch[name].dropna()
        axes.plot(values.index, values.to_numpy(), marker="o", label=name)
    loss_axes.set(xlabel="epoch", ylabel="loss", title="loss")
    f1_axes.set(xlabel="epoch", ylabel="F1 (threshold 0.5)", title="validation F1", ylim=(0, 1))
    for axes in (loss_axes, f1_axes):
        axes.legend()
        axes.grid(alpha=0.3)
        axes.xaxis.get_major_locator().set_params(integer=True)
    return figure


def plot_per_class_f1(per_class: pd.DataFrame, macro_f1: float | None = None) -> Figure:
    """Horizontal bars of each class's F1, labelled ``name (n=support)``; a line at macro F1."""
    figure = new_figure("per_class_f1")
    axes = figure.subplots()
    positions = np.arange(len(per_class))
    labels = [f"{row.class_name} (n={row.support})" for row in per_class.itertuples()]
    axes.barh(positions, per_class["f1"], color="tab:blue")
    for position, value in zip(positions, per_class["f1"], strict=True):
        axes.text(value + 0.01, position, f"{value:.2f}", va="center", fontsize=7)
    if macro_f1 is not None and math.isfinite(macro_f1):
        axes.axvline(macro_f1, color="tab:red", linestyle="--", label=f"macro F1 {macro_f1:.3f}")
        axes.legend(loc="lower right")
    axes.set_yticks(positions, labels, fontsize=8)
    axes.invert_yaxis()
    axes.set(xlim=(0, 1.1), xlabel="F1 on the test split", title="test F1 per class")
    return figure


def plot_precision_recall(
    targets: np.ndarray, probabilities: np.ndarray, operating_points: pd.DataFrame | None = None
) -> Figure:
    """One panel per class: its precision-recall curve and average precision; the precision and
    recall at the run's decision thresholds (``operating_points``, a per-class table) as a dot."""
    # fixed margins: the constrained layout of 28 panels takes seconds
    figure = new_figure("precision_recall", layout=None)
    figure.subplots_adjust(left=0.05, right=0.99, bottom=0.04, top=0.97, hspace=0.45, wspace=0.1)
    grid = figure.subplots(7, 4, sharex=True, sharey=True)
    for class_id, axes in enumerate(grid.flat):
        truth = targets[:, class_id]
        title = f"{class_id} {CLASS_NAMES[class_id]}"
        if truth.sum() == 0:
            axes.text(0.5, 0.5, "no positives\nin the test split", ha="center", va="center")
            axes.set_title(title, fontsize=8)
            continue
        precision, recall, _ = precision_recall_curve(truth, probabilities[:, class_id])
        average_precision = average_precision_score(truth, probabilities[:, class_id])
        axes.plot(recall, precision, drawstyle="steps-post")
        if operating_points is not None:
            point = operating_points.iloc[class_id]
            axes.plot(point["recall"], point["precision"], "o", color="tab:red")
        axes.set_title(f"{title}\nAP {average_precision:.2f}, n={int(truth.sum())}", fontsize=8)
    for axes in grid[-1]:
        axes.set_xlabel("recall")
    for axes in grid[:, 0]:
        axes.set_ylabel("precision")
    grid[0, 0].set(xlim=(0, 1.02), ylim=(0, 1.05))
    return figure


def plot_class_values(
    series: Mapping[str, Sequence[float]],
    ylabel: str,
    title: str,
    log_scale: bool = True,
    name: str = "label_distribution",
) -> Figure:
    """Grouped bars of one value per class for each named series (counts per split, frequencies
    before and after oversampling...), classes along the x axis."""
    figure = new_figure(name)
    axes = figure.subplots()
    positions = np.arange(NUM_CLASSES)
    width = 0.8 / max(len(series), 1)
    for index, (label, values) in enumerate(series.items()):
        axes.bar(positions + (index - (len(series) - 1) / 2) * width, values, width, label=label)
    if log_scale:
        axes.set_yscale("log")
    axes.set_xticks(positions, [f"{i} {n}" for i, n in enumerate(CLASS_NAMES)], rotation=75)
    axes.tick_params(axis="x", labelsize=7)
    axes.set(ylabel=ylabel, title=title, xlim=(-0.6, NUM_CLASSES - 0.4))
    axes.legend()
    axes.grid(axis="y", alpha=0.3)
    return figure


def plot_image_grid(
    images: Sequence[np.ndarray], true: np.ndarray, predicted: np.ndarray, ids: Sequence[str]
) -> Figure:
    """RGBY images (4 x H x W) as composites in a 4 x 4 grid, titled with their true and
    predicted classes: green when the two sets agree, red otherwise."""
    figure = new_figure("test_images")
    grid = figure.subplots(4, 4)
    for index, axes in enumerate(grid.flat):
        axes.set_axis_off()
        if index >= len(images):
            continue
        axes.imshow(rgby_composite(images[index]), interpolation="nearest")
        agree = np.array_equal(true[index], predicted[index])
        caption = "\n".join(
            [
                ids[index][:13],
                *textwrap.wrap("true: " + _short_names(true[index]), 44),
                *textwrap.wrap("pred: " + _short_names(predicted[index]), 44),
            ]
        )
        axes.set_title(caption, fontsize=7, color="tab:green" if agree else "tab:red")
    return figure


def _short_names(multi_hot: np.ndarray, most: int = 4) -> str:
    """Class names of a multi-hot row; past ``most`` classes, the rest as a count."""
    class_ids = np.flatnonzero(multi_hot)
    if len(class_ids) <= most:
        return class_names_of(multi_hot)
    shown = np.zeros_like(multi_hot)
    shown[class_ids[:most]] = 1
    return f"{class_names_of(shown)} +{len(class_ids) - most} more"


def distinct_labels(labels: Sequence[str]) -> list[str]:
    """Run labels of ``hpa.compare`` without the overrides that every run shares (the first word,
    the experiment or task name, is kept): ``train a=1 b=2``, ``train a=1 b=3`` -> ``train b=2``,
    ``train b=3``."""
    words = [label.split() for label in labels]
    shared = set.intersection(*(set(w[1:]) for w in words)) if len(words) > 1 else set()
    return [" ".join(w[:1] + [x for x in w[1:] if x not in shared]) for w in words]


def per_class_f1_table(run_dirs: Sequence[str | Path], names: Sequence[str]) -> pd.DataFrame:
    """Test F1 of each class (columns, class names) for each run (rows, ``names``), read from
    each run's test_per_class.csv."""
    rows = [pd.read_csv(Path(run) / "test_per_class.csv")["f1"].to_numpy() for run in run_dirs]
    return pd.DataFrame(rows, index=list(names), columns=list(CLASS_NAMES))


def plot_f1_heatmap(table: pd.DataFrame) -> Figure:
    """Runs x classes heatmap of per-class F1 (from ``per_class_f1_table``), values written in."""
    figure = Figure(figsize=(14, 2.5 + 0.45 * len(table)), dpi=DPI, layout="constrained")
    axes = figure.subplots()
    image = axes.imshow(table.to_numpy(), vmin=0, vmax=1, cmap="viridis", aspect="auto")
    for (row, column), value in np.ndenumerate(table.to_numpy()):
        if value > 0:
            color = "black" if value > 0.6 else "white"
            axes.text(
                column, row, f"{value:.2f}", ha="center", va="center", fontsize=6, color=color
            )
    axes.set_xticks(range(table.shape[1]), table.columns, rotation=75, fontsize=7)
    axes.set_yticks(range(len(table)), table.index, fontsize=8)
    axes.set_title("test F1 per class and run")
    figure.colorbar(image, ax=axes, label="F1")
    return figure


# --------------------------------------------------------------------------------------------
# A run directory's files -> figures
# --------------------------------------------------------------------------------------------


def _required(path: Path, what: str) -> Path:
    if not path.is_file():
        raise SkipFigure(f"{path.name} not found in the run directory ({what})")
    return path


def find_metrics_csv(run_dir: Path) -> Path | None:
    """The CSV logger's metrics.csv (``csv/metrics.csv`` by default, else any under the run)."""
    default = run_dir / "csv" / "metrics.csv"
    if default.is_file():
        return default
    found = [p for p in sorted(run_dir.rglob("metrics.csv")) if REPORT_DIR not in p.parts]
    return found[0] if found else None


def run_data_root(run_dir: Path) -> Path | None:
    """``data.root`` of the run's ``.hydra/config.yaml``, resolved against its ``hydra.yaml``
    (``${hydra:runtime.cwd}`` is read from there, so no Hydra app needs to be running)."""
    config_path = run_dir / ".hydra" / "config.yaml"
    if not config_path.is_file():
        return None
    try:
        config = OmegaConf.create(config_path.read_text().replace("${hydra:", "${hydra."))
        hydra_path = run_dir / ".hydra" / "hydra.yaml"
        if hydra_path.is_file():
            config = OmegaConf.merge(config, OmegaConf.load(hydra_path))
        root = OmegaConf.select(config, "data.root", throw_on_missing=True)
    except OmegaConfBaseException as error:
        log.warning("cannot resolve data.root of %s: %s", config_path, error)
        return None
    return Path(root) if root else None


def _labels_by_id(data_root: Path | None, run_dir: Path) -> pd.DataFrame:
    """N x 28 multi-hot labels indexed by Id: from the data root's train.csv, else only the test
    images' labels from test_predictions.csv."""
    if data_root is not None and (data_root / "train.csv").is_file():
        ids, labels = read_labels_csv(data_root / "train.csv")
        return pd.DataFrame(labels, index=ids)
    predictions_path = run_dir / "test_predictions.csv"
    if not predictions_path.is_file():
        raise SkipFigure(f"no labels: neither {data_root}/train.csv nor test_predictions.csv")
    log.warning("train.csv not found under data root %s: counting the test split only", data_root)
    predictions = _read_predictions(predictions_path)
    return pd.DataFrame(targets_to_matrix(predictions["Target"]), index=predictions["Id"])


def _read_predictions(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"Id": str, "Target": str}, keep_default_na=False)


def _read_metrics(run_dir: Path) -> dict[str, float]:
    path = run_dir / "metrics.json"
    if not path.is_file():
        raise HPAInputError(f"{path} not found: {run_dir} is not a finished training run")
    try:
        return json.loads(path.read_text())
    except ValueError as error:
        raise HPAInputError(f"{path}: not valid JSON ({error})") from None


def training_curves_figure(run_dir: Path, data_root: Path | None) -> Figure:
    metrics_csv = find_metrics_csv(run_dir)
    if metrics_csv is None:
        raise SkipFigure("no metrics.csv: the run was logged without the CSV logger (logger=csv)")
    per_epoch = epoch_metrics(metrics_csv)
    if per_epoch.empty:
        raise SkipFigure(f"{metrics_csv} holds no finished epoch")
    return plot_training_curves(per_epoch)


def per_class_f1_figure(run_dir: Path, data_root: Path | None) -> Figure:
    per_class = pd.read_csv(_required(run_dir / "test_per_class.csv", "test=true writes it"))
    macro = _read_metrics(run_dir).get(metrics.TEST_F1_MACRO)
    return plot_per_class_f1(per_class, macro)


def precision_recall_figure(run_dir: Path, data_root: Path | None) -> Figure:
    predictions = _read_predictions(
        _required(run_dir / "test_predictions.csv", "test=true writes it")
    )
    per_class_path = run_dir / "test_per_class.csv"
    operating_points = pd.read_csv(per_class_path) if per_class_path.is_file() else None
    targets = targets_to_matrix(predictions["Target"])
    return plot_precision_recall(
        targets, predictions[list(CLASS_NAMES)].to_numpy(), operating_points
    )


def label_distribution_figure(run_dir: Path, data_root: Path | None) -> Figure:
    split = pd.read_csv(_required(run_dir / "split.csv", "written before training"), dtype=str)
    labels = _labels_by_id(data_root, run_dir)
    counts = {}
    for name in SPLITS:
        ids = labels.index.intersection(split.loc[split["split"] == name, "Id"])
        if len(ids):
            counts[f"{name} ({len(ids)} images)"] = labels.loc[ids].sum(axis=0).to_numpy()
    return plot_class_values(counts, "images (log scale)", "images per class in each split")


def sample_images_figure(run_dir: Path, data_root: Path | None) -> Figure:
    predictions = _read_predictions(
        _required(run_dir / "test_predictions.csv", "test=true writes it")
    )
    image_dir = data_root / "train" if data_root is not None else None
    if image_dir is None or not image_dir.is_dir():
        raise SkipFigure(f"image directory {image_dir} not found (pass --data-root)")
    shown = predictions.head(NUM_TEST_IMAGES)
    thresholds_path = run_dir / "thresholds.json"
    thresholds = load_thresholds(thresholds_path) if thresholds_path.is_file() else 0.5
    predicted = binarize(shown[list(CLASS_NAMES)].to_numpy(), thresholds)
    try:
        images = [read_sample(image_dir, sample_id) for sample_id in shown["Id"]]
    except HPAInputError as error:
        raise SkipFigure(str(error)) from None
    true = targets_to_matrix(shown["Target"])
    return plot_image_grid(images, true, predicted, list(shown["Id"]))


FIGURE_BUILDERS: dict[str, Callable[[Path, Path | None], Figure]] = {
    "training_curves": training_curves_figure,
    "per_class_f1": per_class_f1_figure,
    "precision_recall": precision_recall_figure,
    "label_distribution": label_distribution_figure,
    "test_images": sample_images_figure,
}


def _markdown(
    run_dir: Path, run_metrics: dict, figures: dict[str, Path], skipped: dict[str, str]
) -> str:
    headline = [metrics.VAL_F1_MACRO, metrics.VAL_F1_SAMPLES]
    headline += [metrics.TEST_F1_MACRO, metrics.TEST_F1_SAMPLES]
    names = [n for n in headline if n in run_metrics]
    names += sorted(n for n in run_metrics if n not in headline)
    lines = [
        f"# Report of `{run_dir}`",
        "",
        "## Metrics",
        "",
        "| metric | value |",
        "| --- | ---: |",
    ]
    lines += [f"| `{name}` | {float(run_metrics[name]):.4f} |" for name in names]
    lines += ["", "## Figures", ""]
    for name, path in figures.items():
        lines += [f"### {FIGURES[name][0]}", "", f"![{FIGURES[name][0]}]({path.name})", ""]
    if skipped:
        lines += ["## Not drawn", ""]
        lines += [
            f"- {FIGURES[name][0]} (`{name}.png`): {reason}" for name, reason in skipped.items()
        ]
        lines.append("")
    return "\n".join(lines)


def write_report(run_dir: str | Path, data_root: str | Path | None = None) -> dict[str, Path]:
    """Draw every figure of the run into ``RUN_DIR/report/`` and write report.md.

    Returns the figures written (name -> path). ``data_root`` defaults to the run's
    ``data.root``. Raises HPAInputError for a directory without metrics.json.
    """
    run_dir = Path(run_dir)
    run_metrics = _read_metrics(run_dir)
    data_root = Path(data_root) if data_root is not None else run_data_root(run_dir)
    report_dir = run_dir / REPORT_DIR
    figures: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    for name, build in FIGURE_BUILDERS.items():
        try:
            figure = build(run_dir, data_root)
        except SkipFigure as reason:
            log.warning("report: skipping %s: %s", name, reason)
            skipped[name] = str(reason)
            continue
        figures[name] = report_dir / f"{name}.png"
        save_figure(figure, figures[name])
    text = _markdown(run_dir, run_metrics, figures, skipped)
    write_atomic(report_dir / REPORT_FILE, lambda path: path.write_text(text))
    log.info("report: %d figures and %s in %s", len(figures), REPORT_FILE, report_dir)
    return figures


def log_to_wandb(loggers: Sequence[object], figures: Mapping[str, Path]) -> None:
    """Log the report's figures as images to every WandbLogger among ``loggers``."""
    from pytorch_lightning.loggers import WandbLogger

    for logger in loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            images = {f"report/{name}": wandb.Image(str(path)) for name, path in figures.items()}
            logger.experiment.log(images)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hpa.report", description="Draw the figures of a finished hpa run."
    )
    parser.add_argument("run_dir", type=Path, help="a run directory (with metrics.json)")
    parser.add_argument("--data-root", type=Path, help="data root (default: the run's data.root)")
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with exit_on_input_error():
        write_report(args.run_dir, args.data_root)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
