"""Class activation maps of a checkpoint for a few images (``python -m hpa.explain``,
hpa/explain.py).

Each image gets one PNG in the run directory, ``explanations/{Id}.png``
(``RunDir.explanation_png``): its RGBY composite, its green (protein) channel, then one heat map
over the composite per chosen class, titled with the model's probability of the class.

Which images:

- without ``data.root``: those of the checkpoint's own run, found through its run directory (the
  data root of its data config, its ``split.csv``);
- ``data.root=ROOT``: those of ROOT, in ``ROOT/train.csv`` (labelled, ``ROOT/train/``) or in
  ``ROOT/test/`` (unlabelled);
- ``ids=[...]`` names them; by default the first ``num_images`` of the run's test split found in
  the data root's train.csv, else the first ``num_images`` of ``ROOT/test/``.

Which classes (``classes=``): ``predicted``, the classes the model predicts at its thresholds;
``true``, the image's labels; ``all``, every class of the label set. Methods (``method=``): gradcam, gradcam++,
ablationcam (``hpa.integrations.cam``). The method, the class mode, the target layer, the ids
and, for ``classes=true``, their labels are checked, and the images read, before any map is
computed; bad input raises HPAInputError (exit code 2).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, ListConfig
from tqdm import tqdm

from hpa.core.errors import HPAInputError
from hpa.core.labels import LabelSet
from hpa.core.run_dir import RunDir
from hpa.data.reader import read_labels_csv, read_sample
from hpa.integrations import cam
from hpa.models.checkpoints import checkpoint_paths, load_module
from hpa.plots.figures import save_figure
from hpa.plots.rgby import class_names_of
from hpa.run.predicting import test_ids
from hpa.run.reporting import run_data_root

log = logging.getLogger(__name__)

CLASS_MODES = ("predicted", "true", "all")
DEVICES = ("auto", "cpu", "cuda")
PANEL_COLUMNS = 6  # pictures per row of a PNG: classes=all makes 30 of them
_MAX_LISTED = 5


@dataclass(frozen=True)
class Sample:
    """An image to explain: its id, the folder of its channel files, its labels (multi-hot over the label set)
    or None for an unlabelled (test) image."""

    sample_id: str
    image_dir: Path
    labels: np.ndarray | None


def explain(cfg: DictConfig) -> list[Path]:
    """Write the maps of the chosen images; returns the PNG paths in image order."""
    method = cfg.method
    cam.cam_method(method)  # an unknown method is refused here, before any work
    mode = _class_mode(cfg.classes)
    device = _device(cfg.device)
    paths = checkpoint_paths(cfg.ckpt_path)
    if len(paths) != 1:
        raise HPAInputError(
            f"hpa-explain explains one checkpoint, got {len(paths)}: "
            f"{', '.join(map(str, paths[:_MAX_LISTED]))}"
        )
    checkpoint = paths[0]
    trained_in = RunDir.of_checkpoint(checkpoint)
    image_size = trained_in.image_size_or(cfg.data.get("image_size"), checkpoint, "data.image_size")
    module = load_module(checkpoint)
    layer = cam.target_layer_name(module, cfg.get("target_layer"))
    root = _data_root(cfg, trained_in)
    label_set = module.label_set
    samples = select_samples(root, trained_in, as_id_list(cfg.ids), cfg.num_images, label_set)
    if mode == "true":
        _check_labelled(samples)
    module = module.to(device)
    images = np.stack(
        [read_sample(s.image_dir, s.sample_id, int(image_size)) for s in tqdm(samples, "reading")]
    )

    run_dir = RunDir(cfg.paths.output_dir)
    log.info(
        "explaining %d image(s) with %s on layer %s of %s (classes=%s)",
        len(samples),
        method,
        layer,
        checkpoint,
        mode,
    )
    written = []
    for sample, image in tqdm(list(zip(samples, images, strict=True)), "maps", unit="image"):
        class_ids = _class_ids(module, image, sample, mode)
        explanation = cam.explain_images(module, image[None], [class_ids], method, layer)[0]
        path = run_dir.explanation_png(sample.sample_id)
        figure = cam.draw_explanation(
            label_set,
            image,
            explanation.maps,
            explanation.class_ids,
            explanation.probabilities,
            title=_title(label_set, sample, method),
            columns=PANEL_COLUMNS,
        )
        save_figure(figure, path)
        written.append(path)
    log.info("wrote %d explanation(s) to %s", len(written), run_dir.explanations_dir)
    return written


def select_samples(
    root: Path,
    trained_in: RunDir,
    ids: Sequence[str] | None,
    num_images: int,
    label_set: LabelSet,
) -> list[Sample]:
    """The images to explain (see the module docstring); HPAInputError naming unknown ids, and
    (read with the model's ``label_set``) a train.csv label outside the model's classes."""
    labelled = _labelled_ids(root, label_set)
    unlabelled = _unlabelled_ids(root)
    if ids is not None:
        wanted = list(ids)
        known = set(labelled) | set(unlabelled)
        unknown = [i for i in wanted if i not in known]
        if unknown:
            raise HPAInputError(
                f"unknown image id(s) {', '.join(unknown[:_MAX_LISTED])}"
                f"{f' and {len(unknown) - _MAX_LISTED} more' if len(unknown) > _MAX_LISTED else ''}"
                f": not in {root / 'train.csv'} nor in {root / 'test'}/"
            )
        if not wanted:
            raise HPAInputError("ids is empty: name at least one image, or leave ids unset")
        return [_sample(root, i, labelled) for i in wanted]
    if num_images < 1:
        raise HPAInputError(f"num_images must be at least 1, got {num_images}")
    split_ids = trained_in.test_ids() if trained_in.split_file.is_file() else []
    defaults = [i for i in split_ids if i in labelled][:num_images]
    if not defaults:
        defaults = unlabelled[:num_images]
    if not defaults:
        raise HPAInputError(
            f"no images to explain: none of the test split of {trained_in} is in "
            f"{root / 'train.csv'} and {root / 'test'} holds no images; name them with ids=[...]"
        )
    log.info("explaining the first %d test images (ids=[...] picks others)", len(defaults))
    return [_sample(root, i, labelled) for i in defaults]


def _labelled_ids(root: Path, label_set: LabelSet) -> dict[str, np.ndarray]:
    csv_path = root / "train.csv"
    if not csv_path.is_file():
        return {}
    ids, labels = read_labels_csv(csv_path, label_set)
    return dict(zip(ids.tolist(), labels, strict=True))


def _unlabelled_ids(root: Path) -> list[str]:
    """The ids of ``ROOT/test/`` in submission order; none when it holds no images."""
    if not (root / "test").is_dir():
        return []
    try:
        return [str(i) for i in test_ids(root)]
    except HPAInputError:  # an empty test folder
        return []


def _sample(root: Path, sample_id: str, labelled: dict[str, np.ndarray]) -> Sample:
    if sample_id in labelled:
        return Sample(sample_id, root / "train", labelled[sample_id])
    return Sample(sample_id, root / "test", None)


def _data_root(cfg: DictConfig, trained_in: RunDir) -> Path:
    given = cfg.data.get("root")
    root = Path(given) if given else run_data_root(trained_in)
    if root is None:
        raise HPAInputError(
            f"the data root of {trained_in} is unknown (no {RunDir.CONFIG}): set data.root"
        )
    if not root.is_dir():
        raise HPAInputError(f"data root {root} does not exist (set data.root)")
    return root


def _class_mode(mode: str | bool) -> str:
    if mode is True:  # the command line's classes=true, which YAML reads as a boolean
        mode = "true"
    if mode not in CLASS_MODES:
        raise HPAInputError(f"classes={mode!r}: choose one of {', '.join(CLASS_MODES)}")
    return mode


def _check_labelled(samples: Sequence[Sample]) -> None:
    unlabelled = [s.sample_id for s in samples if s.labels is None]
    if unlabelled:
        raise HPAInputError(
            f"classes=true needs labels, but {', '.join(unlabelled[:_MAX_LISTED])} "
            f"{'is a test image' if len(unlabelled) == 1 else 'are test images'} without any "
            "(not in train.csv): use classes=predicted or classes=all"
        )


def _device(name: str) -> torch.device:
    if name not in DEVICES:
        raise HPAInputError(f"device={name!r}: choose one of {', '.join(DEVICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise HPAInputError("device=cuda, but torch sees no CUDA GPU here (device=cpu or auto)")
    return torch.device("cuda" if name != "cpu" and torch.cuda.is_available() else "cpu")


def _class_ids(module, image: np.ndarray, sample: Sample, mode: str) -> np.ndarray:
    if mode == "all":
        return np.arange(module.label_set.num_classes)
    if mode == "true":
        return np.flatnonzero(sample.labels)
    probabilities = cam.class_probabilities(module, image[None])
    return cam.predicted_class_ids(module, probabilities)[0]


def _title(label_set: LabelSet, sample: Sample, method: str) -> str:
    if sample.labels is None:
        labels = "unlabelled"
    else:
        labels = f"true: {class_names_of(label_set, sample.labels)}"
    return f"{sample.sample_id} ({method}; {labels})"


def as_id_list(ids: ListConfig | Sequence | str | int | None) -> list[str] | None:
    """``ids`` of the command line (a string, a list) as a list of strings; None stays None."""
    if ids is None:
        return None
    if isinstance(ids, str | int):
        return [str(ids)]
    return [str(i) for i in ids]
