"""Pure plotting functions: plain tables and arrays in, matplotlib Figures out (drawn with the Agg
canvas, without pyplot, at a fixed size and dpi). Run reports (hpa.run.reporting) and the
notebooks draw with these."""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import average_precision_score, precision_recall_curve

from hpa.core import metric_names
from hpa.core.io import write_bytes
from hpa.core.labels import LabelSet
from hpa.plots.rgby import class_names_of, heat_map_overlay, rgby_composite

DPI = 100
FIGURE_SIZES: dict[str, tuple[float, float]] = {
    "cell_predictions": (14, 14),
    "cell_ap": (10, 6),
    "training_curves": (10.0, 4.0),
    "per_class_f1": (8.0, 9.0),
    "precision_recall": (14.0, 16.0),
    "label_distribution": (12.0, 5.5),
    "test_images": (12.0, 13.0),
    "class_activation_maps": (12.0, 13.0),
}
"""Figure name -> size in inches. Each PNG is exactly size x DPI pixels."""


def figure_pixel_size(name: str) -> tuple[int, int]:
    """(width, height) in pixels of the PNG of figure ``name``."""
    width, height = FIGURE_SIZES[name]
    return round(width * DPI), round(height * DPI)


def new_figure(name: str, layout: str | None = "constrained") -> Figure:
    return Figure(figsize=FIGURE_SIZES[name], dpi=DPI, layout=layout)


def figure_png(figure: Figure) -> bytes:
    """``figure`` drawn as PNG bytes with the Agg canvas (fixed dpi, no tight bounding box)."""
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return buffer.getvalue()


def save_figure(figure: Figure, path: str | Path) -> None:
    """Write ``figure`` as a PNG atomically."""
    write_bytes(path, figure_png(figure))


def plot_training_curves(per_epoch: pd.DataFrame) -> Figure:
    """Losses (left) and validation F1 (right) per epoch, from ``epoch_metrics``."""
    figure = new_figure("training_curves")
    loss_axes, f1_axes = figure.subplots(1, 2)
    for name, axes in (
        (metric_names.TRAIN_LOSS, loss_axes),
        (metric_names.VAL_LOSS, loss_axes),
        (metric_names.VAL_F1_MACRO, f1_axes),
        (metric_names.VAL_F1_SAMPLES, f1_axes),
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


PANEL_COLUMNS = 4


def plot_precision_recall(
    label_set: LabelSet,
    targets: np.ndarray,
    probabilities: np.ndarray,
    operating_points: pd.DataFrame | None = None,
) -> Figure:
    """One panel per class: its precision-recall curve and average precision; the precision and
    recall at the run's decision thresholds (``operating_points``, a per-class table) as a dot."""
    # fixed margins: the constrained layout of a few dozen panels takes seconds
    figure = new_figure("precision_recall", layout=None)
    figure.subplots_adjust(left=0.05, right=0.99, bottom=0.04, top=0.97, hspace=0.45, wspace=0.1)
    rows = -(-label_set.num_classes // PANEL_COLUMNS)
    grid = figure.subplots(rows, PANEL_COLUMNS, sharex=True, sharey=True, squeeze=False)
    for axes in grid.flat[label_set.num_classes :]:
        axes.set_axis_off()
    for class_id, axes in zip(label_set.class_ids, grid.flat, strict=False):
        truth = targets[:, class_id]
        title = f"{class_id} {label_set.class_names[class_id]}"
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
    label_set: LabelSet,
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
    positions = np.arange(label_set.num_classes)
    width = 0.8 / max(len(series), 1)
    for index, (label, values) in enumerate(series.items()):
        axes.bar(positions + (index - (len(series) - 1) / 2) * width, values, width, label=label)
    if log_scale:
        axes.set_yscale("log")
    ticks = [f"{i} {n}" for i, n in enumerate(label_set.class_names)]
    axes.set_xticks(positions, ticks, rotation=75)
    axes.tick_params(axis="x", labelsize=7)
    axes.set(ylabel=ylabel, title=title, xlim=(-0.6, label_set.num_classes - 0.4))
    axes.legend()
    axes.grid(axis="y", alpha=0.3)
    return figure


def plot_image_grid(
    label_set: LabelSet,
    images: Sequence[np.ndarray],
    true: np.ndarray,
    predicted: np.ndarray,
    ids: Sequence[str],
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
                *textwrap.wrap("true: " + _short_names(label_set, true[index]), 44),
                *textwrap.wrap("pred: " + _short_names(label_set, predicted[index]), 44),
            ]
        )
        axes.set_title(caption, fontsize=7, color="tab:green" if agree else "tab:red")
    return figure


CAM_GRID_ROWS = 4
CAM_GRID_COLUMNS = 4
"""The class activation map grid: one image per row, its composite then up to 3 maps."""


def heat_map_title(
    label_set: LabelSet, class_id: int, probability: float, heat_map: np.ndarray
) -> str:
    """``class name``, ``p = probability`` and, for a map that is zero everywhere (nothing in
    the layer speaks for the class: GradCAM keeps only positive evidence), a note saying so."""
    title = f"{label_set.class_names[class_id]}\np = {probability:.2f}"
    return title + " (empty map)" if not np.any(heat_map > 0) else title


def plot_class_activation_maps(
    label_set: LabelSet,
    images: Sequence[np.ndarray],
    maps: Sequence[np.ndarray],
    class_ids: Sequence[Sequence[int]],
    probabilities: Sequence[Sequence[float]],
    ids: Sequence[str],
    method: str = "GradCAM",
) -> Figure:
    """Up to ``CAM_GRID_ROWS`` images, one per row: the RGBY composite (titled with the image id),
    then the heat maps of its classes over it, titled with the class name and probability.

    ``images[i]``: uint8 (4, H, W); ``class_ids[i]``: the image's classes; ``maps[i]`` (M_i, H,
    W) in [0, 1] and ``probabilities[i]`` (M_i) of its first M_i classes. At most
    ``CAM_GRID_COLUMNS - 1`` maps are drawn per row; the composite's title counts the classes
    left out."""
    figure = new_figure("class_activation_maps")
    grid = figure.subplots(CAM_GRID_ROWS, CAM_GRID_COLUMNS, squeeze=False)
    for axes in grid.flat:
        axes.set_axis_off()
    shown_maps = CAM_GRID_COLUMNS - 1
    rows = zip(images, maps, class_ids, probabilities, ids, grid, strict=False)
    for image, image_maps, image_classes, image_probabilities, sample_id, row in rows:
        composite = rgby_composite(image)
        left_out = len(image_classes) - min(len(image_maps), shown_maps)
        row[0].imshow(composite, interpolation="nearest")
        row[0].set_title(
            sample_id[:13] + (f"\n(+{left_out} more classes)" if left_out > 0 else ""), fontsize=8
        )
        panels = zip(image_maps, image_classes, image_probabilities, row[1:], strict=False)
        for heat_map, class_id, probability, axes in panels:
            axes.imshow(heat_map_overlay(composite, heat_map), interpolation="nearest")
            title = heat_map_title(label_set, class_id, probability, heat_map)
            axes.set_title(title, fontsize=8)
    figure.suptitle(f"{method}: where the model finds each predicted class", fontsize=11)
    return figure


def _short_names(label_set: LabelSet, multi_hot: np.ndarray, most: int = 4) -> str:
    """Class names of a multi-hot row; past ``most`` classes, the rest as a count."""
    class_ids = np.flatnonzero(multi_hot)
    if len(class_ids) <= most:
        return class_names_of(label_set, multi_hot)
    shown = np.zeros_like(multi_hot)
    shown[class_ids[:most]] = 1
    return f"{class_names_of(label_set, shown)} +{len(class_ids) - most} more"


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


CELL_GRID = 3
"""The cell figure: a 3 x 3 grid of test images."""


def class_colours(num_classes: int) -> np.ndarray:
    """(num_classes, 3) RGB colours in 0..255, one per class, far apart for up to ~20."""
    from matplotlib import colormaps

    palette = colormaps["tab20"](np.linspace(0, 1, 20))[:, :3]
    return np.round(palette[np.arange(num_classes) % 20] * 255).astype(np.uint8)


def plot_cell_predictions(
    label_set: LabelSet,
    images: Sequence[np.ndarray],
    cells: Sequence[np.ndarray],
    cell_classes: Sequence[Mapping[int, int]],
    ids: Sequence[str],
) -> Figure:
    """Test images (uint8 4 x S x S) as RGBY composites with each cell's outline (``cells[i]``,
    an S x S label image) coloured by its predicted class (``cell_classes[i]``: cell id -> class
    id, the cell's top-scoring class); a legend names the colours shown."""
    from skimage.segmentation import find_boundaries

    figure = new_figure("cell_predictions")
    grid = figure.subplots(CELL_GRID, CELL_GRID, squeeze=False)
    colours = class_colours(label_set.num_classes)
    shown: set[int] = set()
    for index, axes in enumerate(grid.flat):
        axes.set_axis_off()
        if index >= len(images):
            continue
        picture = rgby_composite(images[index]).copy()
        labels = cells[index]
        for cell_id, class_id in cell_classes[index].items():
            outline = find_boundaries(labels == cell_id, mode="thick")
            picture[outline] = colours[class_id]
            shown.add(class_id)
        axes.imshow(picture, interpolation="nearest")
        axes.set_title(f"{ids[index][:13]} ({len(cell_classes[index])} cells)", fontsize=8)
    handles = [
        _patch(colours[class_id] / 255.0, f"{class_id} {label_set.class_names[class_id]}")
        for class_id in sorted(shown)
    ]
    if handles:
        figure.legend(handles=handles, loc="lower center", ncol=4, fontsize=8)
    figure.suptitle("each cell's outline in the colour of its top-scoring class", fontsize=11)
    return figure


def _patch(colour: np.ndarray, label: str):
    from matplotlib.patches import Patch

    return Patch(facecolor=colour, edgecolor="black", label=label)


def plot_cell_ap(per_class: pd.DataFrame, cell_map: float | None) -> Figure:
    """Horizontal bars of each class's cell AP at mask IoU 0.6 (``test_cell_ap.csv``: class_id,
    class_name, ap, truth_cells); classes without truth cells are left out."""
    scored = per_class.dropna(subset=["ap"])
    figure = new_figure("cell_ap")
    axes = figure.subplots()
    positions = np.arange(len(scored))
    axes.barh(positions, scored["ap"], color="tab:purple")
    labels = [
        f"{row.class_id} {row.class_name} (n={int(row.truth_cells)})" for row in scored.itertuples()
    ]
    for position, value in zip(positions, scored["ap"], strict=True):
        axes.text(value + 0.01, position, f"{value:.2f}", va="center", fontsize=7)
    if cell_map is not None and math.isfinite(cell_map):
        axes.axvline(cell_map, color="tab:red", linestyle="--", label=f"cell mAP {cell_map:.3f}")
        axes.legend(loc="lower right")
    axes.set_yticks(positions, labels, fontsize=8)
    axes.invert_yaxis()
    axes.set(xlim=(0, 1.1), xlabel="AP at mask IoU 0.6 (test cells)", title="cell AP per class")
    return figure
