"""The report of one finished run: its figures and ``report.md`` in ``RUN/report/``.

    training_curves.png     train and val loss, val macro and sample F1 per epoch (csv/metrics.csv)
    per_class_f1.png        test F1 of each class, with its support (test_per_class.csv)
    precision_recall.png    one precision-recall curve per class on the test split
                            (test_predictions.csv)
    label_distribution.png  images per class in train / val / test, log scale (split.csv and the
                            labels of the run's data root)
    test_images.png         test images as RGBY composites with true and predicted classes
    class_activation_maps.png
                            GradCAM maps of the classes the model predicts, for the first test
                            images (the best checkpoint, on the GPU when there is one)
    cell_predictions.png    single-cell runs: test images with each cell outlined in the colour
                            of its top-scoring class (test_cells.csv, the masks of cells.json)
    cell_ap.png             single-cell runs: cell AP per class at mask IoU 0.6 (test_cell_ap.csv)
    report.md               the metrics of metrics.json and the figures above

A run without ``metrics.json`` is refused (HPAInputError). A figure whose input is missing (no
CSV logger, no test split, data root moved) is skipped with a warning and listed in report.md.
The drawing itself is in ``hpa.plots.figures``; this module reads the run and writes the files.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from hpa.core import metric_names
from hpa.core.errors import HPAInputError
from hpa.core.io import write_atomic
from hpa.core.run_dir import RunDir
from hpa.data.reader import read_labels_csv, read_sample
from hpa.data.split import SPLITS
from hpa.evaluation.predictions import frame_probabilities, frame_targets
from hpa.evaluation.thresholds import binarize
from hpa.plots.figures import (
    CAM_GRID_COLUMNS,
    CAM_GRID_ROWS,
    CELL_GRID,
    plot_cell_ap,
    plot_cell_predictions,
    plot_class_activation_maps,
    plot_class_values,
    plot_image_grid,
    plot_per_class_f1,
    plot_precision_recall,
    plot_training_curves,
    save_figure,
)

log = logging.getLogger(__name__)

REPORT_FILE = "report.md"
FIGURE_TITLES: dict[str, str] = {
    "training_curves": "Training curves",
    "per_class_f1": "Test F1 per class",
    "precision_recall": "Precision-recall curves on the test split",
    "label_distribution": "Images per class in each split",
    "test_images": "Test images: true and predicted classes",
    "class_activation_maps": "Class activation maps (GradCAM) of the predicted classes",
}
CELL_FIGURE_TITLES: dict[str, str] = {
    "cell_predictions": "Test cells, outlined in the colour of their top-scoring class",
    "cell_ap": "Cell AP per class at mask IoU 0.6",
}
"""The figures of single-cell runs (those with test_cells.csv), after the others."""
CELL_IMAGE_SIZE = 512  # the cell figure shows images (and their masks) at most this large
NUM_TEST_IMAGES = 16
NUM_CAM_IMAGES = CAM_GRID_ROWS  # a handful: the maps need a forward and backward pass each
CAM_METHOD = "GradCAM"


class SkipFigure(Exception):
    """An input of one figure is missing: the figure is left out, with this reason."""


def epoch_metrics(metrics_csv: str | Path) -> pd.DataFrame:
    """Per fitted epoch: train loss, val loss, val macro F1, val sample F1 from a CSVLogger file.

    Rows logged after fitting (the final validation and test of the best checkpoint) carry no
    train loss and are left out.
    """
    logged = pd.read_csv(metrics_csv)
    train_loss = next(
        (c for c in (f"{metric_names.TRAIN_LOSS}_epoch", metric_names.TRAIN_LOSS) if c in logged),
        None,
    )
    if "epoch" not in logged or train_loss is None:
        raise SkipFigure(f"{metrics_csv} has no epoch-level {metric_names.TRAIN_LOSS}")
    columns = {
        train_loss: metric_names.TRAIN_LOSS,
        metric_names.VAL_LOSS: metric_names.VAL_LOSS,
        metric_names.VAL_F1_MACRO: metric_names.VAL_F1_MACRO,
        metric_names.VAL_F1_SAMPLES: metric_names.VAL_F1_SAMPLES,
    }
    present = [column for column in columns if column in logged]
    per_epoch = logged.dropna(subset=["epoch"]).groupby("epoch")[present].last()
    per_epoch = per_epoch.rename(columns=columns).dropna(subset=[metric_names.TRAIN_LOSS])
    per_epoch.index = per_epoch.index.astype(int)
    return per_epoch.reindex(columns=list(columns.values()))


def run_data_root(run_dir: str | Path | RunDir) -> Path | None:
    """``data.root`` of the run, as it was in the run; None when it cannot be resolved."""
    run_dir = RunDir(run_dir)
    if not run_dir.is_run():
        return None
    try:
        root = run_dir.data_config().get("root")
    except HPAInputError as error:
        log.warning("cannot resolve data.root of %s: %s", run_dir, error)
        return None
    return Path(root) if root else None


def _required(run_dir: RunDir, name: str, what: str) -> None:
    if not run_dir.has(name):
        raise SkipFigure(f"{name} not found in the run directory ({what})")


def _labels_by_id(data_root: Path | None, run_dir: RunDir) -> pd.DataFrame:
    """N x classes multi-hot labels indexed by Id: from the data root's train.csv, else only the
    test images' labels from the test predictions."""
    label_set = run_dir.label_set()
    if data_root is not None and (data_root / "train.csv").is_file():
        ids, labels = read_labels_csv(data_root / "train.csv", label_set)
        return pd.DataFrame(labels, index=ids)
    if not run_dir.has(RunDir.TEST_PREDICTIONS):
        raise SkipFigure(f"no labels: neither {data_root}/train.csv nor {RunDir.TEST_PREDICTIONS}")
    log.warning("train.csv not found under data root %s: counting the test split only", data_root)
    predictions = run_dir.test_predictions()
    return pd.DataFrame(frame_targets(label_set, predictions), index=predictions["Id"])


def training_curves_figure(run_dir: RunDir, data_root: Path | None) -> Figure:
    metrics_csv = run_dir.metrics_csv()
    if metrics_csv is None:
        raise SkipFigure("no metrics.csv: the run was logged without the CSV logger (logger=csv)")
    per_epoch = epoch_metrics(metrics_csv)
    if per_epoch.empty:
        raise SkipFigure(f"{metrics_csv} holds no finished epoch")
    return plot_training_curves(per_epoch)


def per_class_f1_figure(run_dir: RunDir, data_root: Path | None) -> Figure:
    _required(run_dir, RunDir.TEST_PER_CLASS, "test=true writes it")
    macro = run_dir.metrics().get(metric_names.TEST_F1_MACRO)
    return plot_per_class_f1(run_dir.test_per_class(), macro)


def precision_recall_figure(run_dir: RunDir, data_root: Path | None) -> Figure:
    _required(run_dir, RunDir.TEST_PREDICTIONS, "test=true writes it")
    predictions = run_dir.test_predictions()
    operating_points = run_dir.test_per_class() if run_dir.has(RunDir.TEST_PER_CLASS) else None
    label_set = run_dir.label_set()
    return plot_precision_recall(
        label_set,
        frame_targets(label_set, predictions),
        frame_probabilities(label_set, predictions),
        operating_points,
    )


def label_distribution_figure(run_dir: RunDir, data_root: Path | None) -> Figure:
    _required(run_dir, RunDir.SPLIT, "written before training")
    split = run_dir.split()
    labels = _labels_by_id(data_root, run_dir)
    counts = {}
    for name in SPLITS:
        ids = labels.index.intersection(split.loc[split["split"] == name, "Id"])
        if len(ids):
            counts[f"{name} ({len(ids)} images)"] = labels.loc[ids].sum(axis=0).to_numpy()
    return plot_class_values(
        run_dir.label_set(), counts, "images (log scale)", "images per class in each split"
    )


def _test_images(
    run_dir: RunDir, data_root: Path | None, count: int, image_size: int | None = None
) -> tuple[pd.DataFrame, list]:
    """(the first ``count`` rows of test_predictions.csv, their images read from the data
    root's train/ folder, resized to ``image_size`` when given)."""
    _required(run_dir, RunDir.TEST_PREDICTIONS, "test=true writes it")
    image_dir = data_root / "train" if data_root is not None else None
    if image_dir is None or not image_dir.is_dir():
        raise SkipFigure(f"image directory {image_dir} not found (pass --data-root)")
    shown = run_dir.test_predictions().head(count)
    try:
        images = [read_sample(image_dir, sample_id, image_size) for sample_id in shown["Id"]]
    except HPAInputError as error:
        raise SkipFigure(str(error)) from None
    return shown, images


def sample_images_figure(run_dir: RunDir, data_root: Path | None) -> Figure:
    shown, images = _test_images(run_dir, data_root, NUM_TEST_IMAGES)
    thresholds = run_dir.thresholds() if run_dir.has(RunDir.THRESHOLDS) else 0.5
    label_set = run_dir.label_set()
    predicted = binarize(frame_probabilities(label_set, shown), thresholds)
    true = label_set.to_matrix(shown["Target"])
    return plot_image_grid(label_set, images, true, predicted, list(shown["Id"]))


def class_activation_maps_figure(run_dir: RunDir, data_root: Path | None) -> Figure:
    """GradCAM maps of the classes the best checkpoint predicts (at its thresholds) for the first
    ``NUM_CAM_IMAGES`` test images, at the size the run trained at."""
    if not run_dir.best_checkpoint.is_file():
        raise SkipFigure(f"{RunDir.BEST_CHECKPOINT} not found (the maps need the trained model)")
    image_size = run_dir.image_size()
    if image_size is None:
        raise SkipFigure(f"{RunDir.CONFIG} not found: the image size of the run is unknown")
    shown, images = _test_images(run_dir, data_root, NUM_CAM_IMAGES, image_size)
    # the model and the grad-cam library only when the figure is drawn
    import torch

    from hpa.integrations import cam
    from hpa.models.checkpoints import load_module

    try:  # the run is trained: a checkpoint or backbone the maps cannot use skips the figure
        module = load_module(run_dir.best_checkpoint)
        cam.target_layer_name(module)
    except HPAInputError as error:
        raise SkipFigure(str(error)) from None
    if torch.cuda.is_available():
        module = module.cuda()
    batch = np.stack(images)
    predicted = cam.predicted_class_ids(module, cam.class_probabilities(module, batch))
    shown_classes = [class_ids[: CAM_GRID_COLUMNS - 1] for class_ids in predicted]
    explanations = cam.explain_images(module, batch, shown_classes, CAM_METHOD)
    return plot_class_activation_maps(
        module.label_set,
        images,
        [explanation.maps for explanation in explanations],
        predicted,
        [explanation.probabilities for explanation in explanations],
        list(shown["Id"]),
        CAM_METHOD,
    )


def cell_predictions_figure(run_dir: RunDir, data_root: Path | None) -> Figure:
    """The first test images of a single-cell run with each cell outlined in the colour of its
    top-scoring class (test_cells.csv, the cached masks named in cells.json)."""
    _required(run_dir, RunDir.CELLS_INFO, "a single-cell run writes it")
    info = run_dir.cells_info()
    masks_dir, image_dir = Path(info["masks_dir"]), Path(info["image_dir"])
    label_set = run_dir.label_set()
    cells = run_dir.test_cells()
    id_column = label_set.id_column
    shown_ids = list(dict.fromkeys(cells[id_column]))[: CELL_GRID**2]
    images, masks, classes = [], [], []
    for sample_id in shown_ids:
        mask_path = masks_dir / f"{sample_id}.png"
        mask = cv2.imread(str(mask_path), cv2.IMREAD_UNCHANGED)
        if mask is None:
            raise SkipFigure(f"cell mask {mask_path} not found (the mask cache was cleared?)")
        size = min(CELL_IMAGE_SIZE, max(mask.shape))
        try:
            images.append(read_sample(image_dir, sample_id, size))
        except HPAInputError as error:
            raise SkipFigure(str(error)) from None
        masks.append(cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST))
        rows = cells[cells[id_column] == sample_id]
        scores = rows[list(label_set.class_names)].to_numpy()
        classes.append(dict(zip(rows["cell_id"].astype(int), scores.argmax(axis=1), strict=True)))
    return plot_cell_predictions(label_set, images, masks, classes, shown_ids)


def cell_ap_figure(run_dir: RunDir, data_root: Path | None) -> Figure:
    _required(run_dir, RunDir.TEST_CELL_AP, "a single-cell run writes it where cell truth exists")
    return plot_cell_ap(run_dir.test_cell_ap(), run_dir.metrics().get(metric_names.TEST_CELL_MAP))


FIGURE_BUILDERS: dict[str, Callable[[RunDir, Path | None], Figure]] = {
    "training_curves": training_curves_figure,
    "per_class_f1": per_class_f1_figure,
    "precision_recall": precision_recall_figure,
    "label_distribution": label_distribution_figure,
    "test_images": sample_images_figure,
    "class_activation_maps": class_activation_maps_figure,
}
CELL_FIGURE_BUILDERS: dict[str, Callable[[RunDir, Path | None], Figure]] = {
    "cell_predictions": cell_predictions_figure,
    "cell_ap": cell_ap_figure,
}


def _markdown(
    run_dir: RunDir, run_metrics: dict, figures: dict[str, Path], skipped: dict[str, str]
) -> str:
    names = [name for name in metric_names.HEADLINE if name in run_metrics]
    names += sorted(name for name in run_metrics if name not in metric_names.HEADLINE)
    lines = [
        f"# Report of `{run_dir}`",
        "",
        "## Metrics",
        "",
        "| metric | value |",
        "| --- | ---: |",
    ]
    lines += [f"| `{name}` | {float(run_metrics[name]):.4f} |" for name in names]
    titles = {**FIGURE_TITLES, **CELL_FIGURE_TITLES}
    lines += ["", "## Figures", ""]
    for name, path in figures.items():
        title = titles[name]
        lines += [f"### {title}", "", f"![{title}]({path.name})", ""]
    if skipped:
        lines += ["## Not drawn", ""]
        lines += [f"- {titles[name]} (`{name}.png`): {reason}" for name, reason in skipped.items()]
        lines.append("")
    return "\n".join(lines)


def write_report(run_dir: str | Path, data_root: str | Path | None = None) -> dict[str, Path]:
    """Draw every figure of the run into ``RUN/report/`` and write report.md.

    Returns the figures written (name -> path). ``data_root`` defaults to the run's
    ``data.root``. Raises HPAInputError for a directory without metrics.json.
    """
    run = RunDir(run_dir)
    run_metrics = run.metrics()
    data_root = Path(data_root) if data_root is not None else run_data_root(run)
    figures: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    builders = dict(FIGURE_BUILDERS)
    if run.has(RunDir.TEST_CELLS):
        builders.update(CELL_FIGURE_BUILDERS)
    for name, build in builders.items():
        try:
            figure = build(run, data_root)
        except SkipFigure as reason:
            log.warning("report: skipping %s: %s", name, reason)
            skipped[name] = str(reason)
            continue
        figures[name] = run.report_dir / f"{name}.png"
        save_figure(figure, figures[name])
    text = _markdown(run, run_metrics, figures, skipped)
    write_atomic(run.report_dir / REPORT_FILE, lambda path: path.write_text(text))
    log.info("report: %d figures and %s in %s", len(figures), REPORT_FILE, run.report_dir)
    return figures


def log_to_wandb(loggers: Sequence[object], figures: Mapping[str, Path]) -> None:
    """Log the report's figures as images to every WandbLogger among ``loggers``."""
    from pytorch_lightning.loggers import WandbLogger

    for logger in loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            images = {f"report/{name}": wandb.Image(str(path)) for name, path in figures.items()}
            logger.experiment.log(images)
