"""The run directory: the one owner of every artifact and checkpoint name, and of every reader of
a finished run.

A training run (``python -m hpa.train``) writes::

    RUN/.hydra/config.yaml  overrides.yaml  hydra.yaml   the composed config (Hydra)
    RUN/checkpoints/best.ckpt  last.ckpt                best by the optimized metric; latest
    RUN/checkpoints/epoch=NN.ckpt               the last K epochs (callbacks.epoch_checkpoints)
    RUN/split.csv               Id,split[,fold]
    RUN/labels.json             the run's label set (hpa.core.labels.LabelSet.to_dict)
    RUN/class_counts.csv        class_id, class_name, train_images, train_rate, pos_weight,
                                sampler_weight: the class statistics of the train split used
    RUN/metrics.json            final val and test metrics, plain floats
    RUN/evaluated_weights.json  which weights those metrics are of: a checkpoint, or the final
                                weights (with a warning) when no best checkpoint was saved
    RUN/thresholds.json         per-class decision thresholds
    RUN/test_predictions.csv    Id, one probability column per class, Target
    RUN/test_per_class.csv      precision, recall, F1, support per class
    RUN/test_cells.csv          the 2021 task: each test cell's scores (ID, cell_id, a column
                                per class); test_cell_ap.csv: cell AP per class; cells.json: the
                                cell method and where the masks are; train_cells.csv and
                                val_cells.csv with cells.score_splits=[train,val,test]
    RUN/skipped_images.csv      Id,file,problem of samples dropped by data.on_bad_image=skip
    RUN/duplicate_leaks.csv     duplicate pairs per pair of splits, before and after grouping
    RUN/external.csv            root,Id,status,reason of each image of data.external
    RUN/csv/metrics.csv         the CSV logger's per-step and per-epoch metrics
    RUN/report/                 figures and report.md (hpa.report)

``hpa.eval`` writes the metrics, predictions and per-class files into its own run directory;
``hpa.predict`` writes ``submission.csv`` and ``probabilities.csv``; ``hpa.explain`` writes
``explanations/{Id}.png`` (class activation maps); ``hpa.export`` writes ``model.onnx``.
``hpa.average RUN --last K`` writes a sub-run ``RUN/average-lastK/`` that reads like a run (its
``.hydra/`` is RUN's config with an ``average`` node added) holding ``checkpoints/averaged.ckpt``
and the files of a finished run. Other modules ask a ``RunDir`` for these paths and contents
instead of spelling the names again.

This module imports neither torch nor Lightning (the checkpoint callbacks import Lightning when
called), so that prediction with an exported ONNX model runs without them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hpa.core.errors import HPAInputError
from hpa.core.io import atomic_path, write_csv, write_json
from hpa.core.labels import HPA2018, LabelSet
from hpa.core.thresholds_file import load_thresholds, save_thresholds

if TYPE_CHECKING:
    from pytorch_lightning.callbacks import ModelCheckpoint

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
BEST_CHECKPOINT_STEM = "best"
LAST_CHECKPOINT_STEM = "last"
CHECKPOINT_SUFFIX = ".ckpt"
EPOCH_CHECKPOINT_PREFIX = "epoch="
# Lightning's filename template of the epoch checkpoints: checkpoints/epoch=07.ckpt
EPOCH_CHECKPOINT_TEMPLATE = EPOCH_CHECKPOINT_PREFIX + "{epoch:02d}"
AVERAGED_CHECKPOINT_STEM = "averaged"


class RunDir:
    """One run directory, given by its path (it need not exist yet)."""

    HYDRA_DIR = ".hydra"
    CONFIG = f"{HYDRA_DIR}/config.yaml"
    OVERRIDES = f"{HYDRA_DIR}/overrides.yaml"
    HYDRA = f"{HYDRA_DIR}/hydra.yaml"
    BEST_CHECKPOINT = f"{CHECKPOINT_DIR}/{BEST_CHECKPOINT_STEM}{CHECKPOINT_SUFFIX}"
    LAST_CHECKPOINT = f"{CHECKPOINT_DIR}/{LAST_CHECKPOINT_STEM}{CHECKPOINT_SUFFIX}"
    AVERAGED_CHECKPOINT = f"{CHECKPOINT_DIR}/{AVERAGED_CHECKPOINT_STEM}{CHECKPOINT_SUFFIX}"
    AVERAGE_SUBRUN = "average-last{last}"  # RUN/average-last5/: hpa.average RUN --last 5
    SPLIT = "split.csv"
    LABELS = "labels.json"
    EVALUATED_WEIGHTS = "evaluated_weights.json"
    TEST_CELLS = "test_cells.csv"
    TEST_CELL_AP = "test_cell_ap.csv"
    CELLS_INFO = "cells.json"
    CLASS_COUNTS = "class_counts.csv"
    METRICS = "metrics.json"
    THRESHOLDS = "thresholds.json"
    TEST_PREDICTIONS = "test_predictions.csv"
    TEST_PER_CLASS = "test_per_class.csv"
    SKIPPED_IMAGES = "skipped_images.csv"
    LEAK_REPORT = "duplicate_leaks.csv"
    EXTERNAL_SAMPLES = "external.csv"
    SUBMISSION = "submission.csv"
    PROBABILITIES = "probabilities.csv"
    CSV_LOGGER_DIR = "csv"
    CSV_METRICS = f"{CSV_LOGGER_DIR}/metrics.csv"
    REPORT_DIR = "report"
    EXPLANATIONS_DIR = "explanations"
    EXPLANATION_SUFFIX = ".png"  # EXPLANATIONS_DIR/{Id}.png: one image's maps (hpa.explain)
    ONNX_MODEL = "model.onnx"
    EXPORT_CHECK = "export_check.json"  # hpa.export: the parity check, on which images

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.checkpoint_dir = self.path / CHECKPOINT_DIR
        self.best_checkpoint = self.path / self.BEST_CHECKPOINT
        self.last_checkpoint = self.path / self.LAST_CHECKPOINT
        self.split_file = self.path / self.SPLIT
        self.report_dir = self.path / self.REPORT_DIR
        self.averaged_checkpoint = self.path / self.AVERAGED_CHECKPOINT

    @classmethod
    def of_checkpoint(cls, checkpoint_path: str | Path) -> RunDir:
        """The run a checkpoint was saved in: ``RUN/checkpoints/best.ckpt`` -> ``RUN``."""
        return cls(Path(checkpoint_path).resolve().parent.parent)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __str__(self) -> str:
        return str(self.path)

    def __fspath__(self) -> str:
        return str(self.path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    # ----------------------------------------------------------------------------------------
    # what a directory is
    # ----------------------------------------------------------------------------------------

    def is_run(self) -> bool:
        """A Hydra run directory (it has ``.hydra/config.yaml``)."""
        return (self.path / self.CONFIG).is_file()

    def is_finished(self) -> bool:
        """A run that wrote its final metrics."""
        return (self.path / self.METRICS).is_file()

    # ----------------------------------------------------------------------------------------
    # paths (the fixed ones are attributes: checkpoint_dir, best_checkpoint, ...)
    # ----------------------------------------------------------------------------------------

    def epoch_checkpoints(self) -> list[Path]:
        """``checkpoints/epoch=NN.ckpt`` files, in epoch order."""
        found = self.checkpoint_dir.glob(f"{EPOCH_CHECKPOINT_PREFIX}*{CHECKPOINT_SUFFIX}")
        numbered = []
        for path in found:
            number = path.stem.removeprefix(EPOCH_CHECKPOINT_PREFIX)
            if number.isdigit():
                numbered.append((int(number), path))
        return [path for _, path in sorted(numbered)]

    def average_subrun(self, last: int) -> RunDir:
        """The sub-run ``hpa.average`` writes for the average of the last ``last`` epochs."""
        return RunDir(self.path / self.AVERAGE_SUBRUN.format(last=last))

    @property
    def explanations_dir(self) -> Path:
        return self.path / self.EXPLANATIONS_DIR

    def explanation_png(self, sample_id: str) -> Path:
        """The PNG of one image's class activation maps: ``explanations/{Id}.png``."""
        return self.explanations_dir / f"{sample_id}{self.EXPLANATION_SUFFIX}"

    @property
    def onnx_model(self) -> Path:
        return self.path / self.ONNX_MODEL

    def metrics_csv(self) -> Path | None:
        """The CSV logger's metrics.csv (``csv/metrics.csv`` by default, else any in the run)."""
        default = self.path / self.CSV_METRICS
        if default.is_file():
            return default
        found = [
            path
            for path in sorted(self.path.rglob("metrics.csv"))
            if self.REPORT_DIR not in path.relative_to(self.path).parts
        ]
        return found[0] if found else None

    # ----------------------------------------------------------------------------------------
    # readers
    # ----------------------------------------------------------------------------------------

    def config(self) -> DictConfig:
        """The run's composed config; its interpolations resolve, on access, as they did in the
        run.

        ``${hydra:...}`` interpolations (the working directory, the output directory, the config
        choices) are answered from the run's own ``.hydra/hydra.yaml``, not from the process
        reading it; ``${oc.env:...}`` reads this process's environment.
        """
        config_path = self.path / self.CONFIG
        if not config_path.is_file():
            raise HPAInputError(f"{config_path} not found: {self.path} is not a run directory")
        # Hydra's `hydra:` resolver reads the running app's HydraConfig; pointing each
        # `${hydra:key}` at the run's saved hydra node makes it an ordinary interpolation
        text = config_path.read_text().replace("${hydra:", "${hydra.")
        config = OmegaConf.create(text)
        hydra_path = self.path / self.HYDRA
        if hydra_path.is_file():
            config = OmegaConf.merge(config, OmegaConf.load(hydra_path))
        return config

    def config_text(self) -> str:
        """``.hydra/config.yaml`` as written (its interpolations unresolved); "" when absent."""
        path = self.path / self.CONFIG
        return path.read_text() if path.is_file() else ""

    def resolved(self, key: str) -> DictConfig:
        """The run's config node ``key`` (e.g. ``data``) with its interpolations resolved."""
        config = self.config()
        try:
            node = OmegaConf.select(config, key, throw_on_missing=True)
            if node is None:
                raise HPAInputError(f"{self.path / self.CONFIG} has no {key} config")
            return OmegaConf.create(OmegaConf.to_container(node, resolve=True))
        except OmegaConfBaseException as error:
            raise HPAInputError(
                f"{self.path / self.CONFIG}: cannot resolve its {key} config ({error})"
            ) from None

    def data_config(self) -> DictConfig:
        """The run's ``data`` config, resolved."""
        return self.resolved("data")

    def image_size(self) -> int | None:
        """The image size the run trained at, or None when the run left no config."""
        if not self.is_run():
            return None
        return int(self.data_config().image_size)

    def image_size_or(self, given: int | None, checkpoint: Path, setting: str) -> int:
        """``given`` when set, else the size the run trained at; refuses, naming ``setting``,
        when neither is known (a checkpoint without its run's config)."""
        image_size = given or self.image_size()
        if image_size is None:
            raise HPAInputError(
                f"the image size of {checkpoint} is unknown (no {self / self.CONFIG}): "
                f"set {setting}"
            )
        return int(image_size)

    def load_size(self) -> int | None:
        """The size the run read its images at before cropping (``data.load_size``), or None
        when it read them at its image size."""
        if not self.is_run():
            return None
        load_size = self.data_config().get("load_size")
        return None if load_size is None else int(load_size)

    def overrides(self) -> list[str]:
        """The command-line overrides of the run."""
        path = self.path / self.OVERRIDES
        if not path.is_file():
            return []
        return [str(item) for item in (OmegaConf.to_container(OmegaConf.load(path)) or [])]

    def config_choices(self) -> dict[str, str]:
        """Hydra's config-group choices of the run (``{"model": "resnet18", ...}``)."""
        path = self.path / self.HYDRA
        if not path.is_file():
            return {}
        choices = OmegaConf.select(OmegaConf.load(path), "hydra.runtime.choices")
        return {str(k): str(v) for k, v in (choices or {}).items()}

    def metrics(self) -> dict[str, float]:
        """``metrics.json``; HPAInputError when the run has none or it is not JSON."""
        path = self.path / self.METRICS
        if not path.is_file():
            raise HPAInputError(f"{path} not found: {self.path} is not a finished run")
        try:
            return json.loads(path.read_text())
        except ValueError as error:
            raise HPAInputError(f"{path}: not valid JSON ({error})") from None

    def thresholds(self) -> np.ndarray:
        return load_thresholds(self.path / self.THRESHOLDS, self.label_set())

    def label_set(self) -> LabelSet:
        """The run's label set (``labels.json``); hpa2018 for runs made before label sets."""
        path = self.path / self.LABELS
        if not path.is_file():
            return HPA2018
        try:
            return LabelSet.from_dict(json.loads(path.read_text()))
        except (ValueError, TypeError) as error:
            raise HPAInputError(f"{path}: not a label set ({error})") from None

    def class_counts(self) -> pd.DataFrame:
        """``class_counts.csv``: the class statistics of the run's train split."""
        return pd.read_csv(self.path / self.CLASS_COUNTS)

    def has(self, name: str) -> bool:
        """Whether the artifact ``name`` (one of the names above) exists."""
        return (self.path / name).is_file()

    def test_predictions(self) -> pd.DataFrame:
        """``Id``, a probability column per class name of the run's label set, ``Target`` (the
        label set's spelling of the true labels); ids and targets as str."""
        return pd.read_csv(
            self.path / self.TEST_PREDICTIONS,
            dtype={"Id": str, "Target": str},
            keep_default_na=False,
        )

    def test_per_class(self) -> pd.DataFrame:
        return pd.read_csv(self.path / self.TEST_PER_CLASS)

    def split(self) -> pd.DataFrame:
        """``split.csv`` as a table of strings (Id, split[, fold])."""
        return pd.read_csv(self.split_file, dtype=str, keep_default_na=False)

    def test_ids(self) -> np.ndarray:
        """The ids of the test split in ``split.csv`` order; HPAInputError without split.csv."""
        if not self.split_file.is_file():
            raise HPAInputError(f"{self.split_file} not found: no test split known for {self.path}")
        split = self.split()
        return split.loc[split["split"] == "test", "Id"].to_numpy(dtype=str)

    # ----------------------------------------------------------------------------------------
    # writers (all atomic)
    # ----------------------------------------------------------------------------------------

    def write_metrics(self, metrics: dict[str, float]) -> None:
        write_json(self.path / self.METRICS, metrics)

    def write_thresholds(self, thresholds: np.ndarray, label_set: LabelSet) -> None:
        save_thresholds(self.path / self.THRESHOLDS, thresholds, label_set)

    def write_test_cells(self, cells: pd.DataFrame) -> None:
        write_csv(self.path / self.TEST_CELLS, cells)

    def split_cells_path(self, split: str) -> Path:
        """``{split}_cells.csv``: every cell's scores of one split (test_cells.csv for test;
        train_cells.csv: the pseudo-labels of a second stage, ``data.crops.pseudo_labels``)."""
        return self.path / f"{split}_cells.csv"

    def write_split_cells(self, split: str, cells: pd.DataFrame) -> None:
        write_csv(self.split_cells_path(split), cells)

    def write_test_cell_ap(self, table: pd.DataFrame) -> None:
        write_csv(self.path / self.TEST_CELL_AP, table)

    def write_cells_info(self, info: dict) -> None:
        write_json(self.path / self.CELLS_INFO, info)

    def cells_info(self) -> dict:
        """``cells.json``: how the run scored cells and where its masks are."""
        return json.loads((self.path / self.CELLS_INFO).read_text())

    def test_cells(self) -> pd.DataFrame:
        """``test_cells.csv``: the id, cell id and one score column per class of each cell."""
        id_column = self.label_set().id_column
        return pd.read_csv(self.path / self.TEST_CELLS, dtype={id_column: str})

    def test_cell_ap(self) -> pd.DataFrame:
        return pd.read_csv(self.path / self.TEST_CELL_AP)

    def write_evaluated_weights(self, checkpoint_path: str | Path | None) -> None:
        """Which weights the final metrics are of: ``checkpoint_path``, or (None) the weights
        the model ended training with."""
        if checkpoint_path is None:
            record = {
                "weights": "final",
                "checkpoint": None,
                "why": "no best checkpoint was saved (no checkpoint callback monitoring "
                "optimized_metric): the metrics are of the weights training ended with",
            }
        else:
            record = {"weights": Path(checkpoint_path).name, "checkpoint": str(checkpoint_path)}
        write_json(self.path / self.EVALUATED_WEIGHTS, record)

    def evaluated_weights(self) -> dict:
        return json.loads((self.path / self.EVALUATED_WEIGHTS).read_text())

    def write_export_check(self, check: dict) -> None:
        write_json(self.path / self.EXPORT_CHECK, check)

    def write_label_set(self, label_set: LabelSet) -> None:
        write_json(self.path / self.LABELS, label_set.to_dict())

    def write_class_counts(self, table: pd.DataFrame) -> None:
        write_csv(self.path / self.CLASS_COUNTS, table)

    def write_test_predictions(self, predictions: pd.DataFrame, label_set: LabelSet) -> None:
        expected = ["Id", *label_set.class_names, "Target"]
        if list(predictions.columns) != expected:
            raise ValueError(f"test predictions need the columns {expected}")
        write_csv(self.path / self.TEST_PREDICTIONS, predictions)

    def write_test_per_class(self, report: pd.DataFrame) -> None:
        write_csv(self.path / self.TEST_PER_CLASS, report)

    def write_skipped_images(self, skipped: pd.DataFrame | None) -> None:
        """``skipped_images.csv`` (Id, file, problem), when samples were skipped."""
        if skipped is not None and len(skipped):
            write_csv(self.path / self.SKIPPED_IMAGES, skipped)

    def write_leak_report(self, report: pd.DataFrame | None) -> None:
        """``duplicate_leaks.csv``, when duplicates were looked for (hpa.data.duplicates)."""
        if report is not None:
            write_csv(self.path / self.LEAK_REPORT, report)

    def write_external_samples(self, table: pd.DataFrame | None) -> None:
        """``external.csv`` (root, Id, status, reason), when the run had external data."""
        if table is not None:
            write_csv(self.path / self.EXTERNAL_SAMPLES, table)

    def write_config_derived_from(
        self, source: RunDir, node: str, values: dict, override: str
    ) -> None:
        """Make this directory read as a run derived from ``source`` (``hpa.average``): its
        ``.hydra/`` is ``source``'s, with ``node: values`` added to the config, ``override``
        added to the overrides (so ``hpa.compare`` labels it) and this directory as Hydra's
        output directory."""
        config = OmegaConf.load(source.path / self.CONFIG)
        OmegaConf.update(config, node, values, force_add=True)
        overrides = [*source.overrides(), override]
        hydra_path = source.path / self.HYDRA
        hydra = OmegaConf.load(hydra_path) if hydra_path.is_file() else OmegaConf.create()
        OmegaConf.update(
            hydra, "hydra.runtime.output_dir", str(self.path.resolve()), force_add=True
        )
        for name, content in ((self.CONFIG, config), (self.HYDRA, hydra)):
            with atomic_path(self.path / name) as temporary:
                OmegaConf.save(content, temporary)
        with atomic_path(self.path / self.OVERRIDES) as temporary:
            OmegaConf.save(OmegaConf.create(overrides), temporary)

    def write_submission(self, submission: pd.DataFrame, probabilities: pd.DataFrame) -> None:
        write_csv(self.path / self.SUBMISSION, submission)
        write_csv(self.path / self.PROBABILITIES, probabilities)


def model_files(
    given: str | Path | Sequence[str | Path], name_in_run: str, what: str = "checkpoint"
) -> list[Path]:
    """Model files (``what``: checkpoints, ONNX models) given as a file, a list of them, or folders
    holding ``**/{name_in_run}`` (a run or a multirun of k-fold runs), as a list of files;
    HPAInputError for a path that does not exist or a folder without any."""
    if isinstance(given, str | Path):
        given = [given]
    entries = [Path(str(entry)) for entry in given]
    if not entries:
        raise HPAInputError(f"ckpt_path is empty: give a {what}, a list of them or a folder")
    paths: list[Path] = []
    for entry in entries:
        if entry.is_dir():
            found = sorted(entry.glob(f"**/{name_in_run}"))
            if not found:
                raise HPAInputError(f"no {name_in_run} under {entry}")
            paths.extend(found)
        elif entry.is_file():
            paths.append(entry)
        else:
            raise HPAInputError(f"{what} {entry} does not exist")
    return paths


def best_checkpoint_callback(run_dir: str | Path, **kwargs) -> ModelCheckpoint:
    """Lightning's ModelCheckpoint keeping ``RUN/checkpoints/best.ckpt``: the best by ``monitor``
    (with ``mode``), overwritten when it improves. Other ModelCheckpoint arguments pass
    through."""
    import pytorch_lightning as pl

    return pl.callbacks.ModelCheckpoint(
        dirpath=RunDir(run_dir).checkpoint_dir,
        filename=BEST_CHECKPOINT_STEM,
        save_top_k=1,
        auto_insert_metric_name=False,
        enable_version_counter=False,
        **kwargs,
    )


def last_checkpoint_callback(run_dir: str | Path) -> ModelCheckpoint:
    """Lightning's ModelCheckpoint writing ``RUN/checkpoints/last.ckpt`` after every epoch, to
    resume from. A callback of its own: Lightning 2.6 writes a monitoring callback's
    ``save_last`` file only at epochs where the monitored metric improved."""
    import pytorch_lightning as pl

    return pl.callbacks.ModelCheckpoint(
        dirpath=RunDir(run_dir).checkpoint_dir,
        filename=LAST_CHECKPOINT_STEM,
        monitor=None,
        save_top_k=1,
        enable_version_counter=False,
    )


def epoch_checkpoints_callback(run_dir: str | Path, keep_last: int) -> ModelCheckpoint:
    """Lightning's ModelCheckpoint keeping ``RUN/checkpoints/epoch=NN.ckpt`` of the last
    ``keep_last`` epochs (0: none), the checkpoints ``hpa.average RUN --last K`` averages.
    Lightning keeps the top k by a monitored value: here the epoch, so the latest ones."""
    if keep_last < 0:
        raise ValueError(f"keep_last must be >= 0 (0: no epoch checkpoints), got {keep_last}")
    import pytorch_lightning as pl

    return pl.callbacks.ModelCheckpoint(
        dirpath=RunDir(run_dir).checkpoint_dir,
        filename=EPOCH_CHECKPOINT_TEMPLATE,
        monitor="epoch",
        mode="max",
        save_top_k=keep_last,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
