"""Compare finished training runs: one row per run, the seed report's results table.

    python -m hpa.compare logs/train/multiruns/2026-01-01_00-00-00 [PATH ...] \\
        [--sort val/f1_macro] [--ascending] [--format table|csv|markdown] [--output FILE]

A PATH is a run directory, a multirun folder or any folder: run directories (a ``metrics.json``
or a ``.hydra/config.yaml``) are searched recursively. A run with a config but no
``metrics.json`` is unfinished: it is skipped with a warning.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd
import yaml

from hpa.evaluation.metrics import TEST_F1_MACRO, TEST_F1_SAMPLES, VAL_F1_MACRO, VAL_F1_SAMPLES
from hpa.io import write_atomic
from hpa.labels import SEED_MINORITY_CLASSES

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
CONFIG_FILE = Path(".hydra") / "config.yaml"
OVERRIDES_FILE = Path(".hydra") / "overrides.yaml"
HYDRA_FILE = Path(".hydra") / "hydra.yaml"

PER_CLASS_FILE = "test_per_class.csv"

METRIC_COLUMNS = (VAL_F1_MACRO, VAL_F1_SAMPLES, TEST_F1_MACRO, TEST_F1_SAMPLES)
# mean test recall of the seed report's seven minority classes (the seven rarest), from the
# run's test_per_class.csv: what oversampling and tuned thresholds are meant to raise
MINORITY_RECALL = "test/recall_minority"
COLUMNS = ("run", "model", *METRIC_COLUMNS, MINORITY_RECALL, "path")
FORMATS = ("table", "csv", "markdown")

# Overrides that say where things are, not what was trained: left out of a run's label.
_PATH_KEY_PREFIXES = ("hydra.", "paths.")
_PATH_KEY_SUFFIXES = ("dir", "root", "file", "path")


class CompareError(Exception):
    """A user error of the compare CLI (missing path, no runs): exit code 2."""


def is_run_dir(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file()


def _is_finished(path: Path) -> bool:
    return (path / METRICS_FILE).is_file()


def _candidate_dirs(root: Path) -> Iterable[Path]:
    if is_run_dir(root):
        yield root
    for config in root.rglob(str(CONFIG_FILE)):
        run_dir = config.parent.parent
        if run_dir != root:
            yield run_dir


def find_runs(paths: Sequence[str | Path]) -> list[Path]:
    """The finished run directories under ``paths``, sorted and without duplicates.

    Unfinished runs (a ``.hydra/config.yaml`` but no ``metrics.json``) are logged and skipped.
    Raises ``CompareError`` for a path that does not exist.
    """
    found: set[Path] = set()
    for raw in paths:
        root = Path(raw)
        if not root.exists():
            raise CompareError(f"path does not exist: {root}")
        for run_dir in _candidate_dirs(root):
            if _is_finished(run_dir):
                found.add(run_dir.resolve())
            else:
                log.warning("skipping unfinished run (no %s): %s", METRICS_FILE, run_dir)
    return sorted(found)


def _read_yaml(path: Path) -> object:
    if not path.is_file():
        return None
    return yaml.safe_load(path.read_text())


def _is_path_override(override: str) -> bool:
    key = override.split("=", 1)[0].lstrip("+~")
    return key.startswith(_PATH_KEY_PREFIXES) or key.endswith(_PATH_KEY_SUFFIXES)


def _experiment(overrides: list[str], hydra_cfg: object) -> str | None:
    for override in overrides:
        key, _, value = override.partition("=")
        if key.lstrip("+") == "experiment" and value:
            return value
    if isinstance(hydra_cfg, dict):
        choices = hydra_cfg.get("hydra", {}).get("runtime", {}).get("choices", {})
        experiment = choices.get("experiment") if isinstance(choices, dict) else None
        if experiment and experiment != "null":
            return str(experiment)
    return None


def run_label(config: dict, overrides: list[str], hydra_cfg: object = None) -> str:
    """The experiment name (else ``task_name``), then the run's non-path overrides."""
    name = _experiment(overrides, hydra_cfg) or str(config.get("task_name", "run"))
    kept = [
        override
        for override in overrides
        if not _is_path_override(override) and override.split("=", 1)[0].lstrip("+") != "experiment"
    ]
    return " ".join([name, *kept])


def _metric(metrics: dict, name: str) -> float:
    value = metrics.get(name)
    return float(value) if isinstance(value, (int, float)) else math.nan


def minority_recall(per_class_csv: Path) -> float:
    """Mean recall of the seven minority classes in a per-class report; NaN without one."""
    if not per_class_csv.is_file():
        return math.nan
    report = pd.read_csv(per_class_csv)
    return float(report.loc[report["class_id"].isin(SEED_MINORITY_CLASSES), "recall"].mean())


def load_run(path: str | Path) -> dict:
    """One row of the comparison: ``run``, ``model``, the four F1 metrics and ``path``."""
    path = Path(path)
    config = _read_yaml(path / CONFIG_FILE) or {}
    overrides = [str(item) for item in (_read_yaml(path / OVERRIDES_FILE) or [])]
    hydra_cfg = _read_yaml(path / HYDRA_FILE)
    metrics = json.loads((path / METRICS_FILE).read_text())
    model = config.get("model") or {}
    row = {
        "run": run_label(config, overrides, hydra_cfg),
        "model": str(model.get("name", "")) if isinstance(model, dict) else "",
    }
    row.update({name: _metric(metrics, name) for name in METRIC_COLUMNS})
    row[MINORITY_RECALL] = minority_recall(path / PER_CLASS_FILE)
    row["path"] = str(path)
    return row


def compare_runs(
    paths: Sequence[str | Path], sort_by: str = VAL_F1_MACRO, ascending: bool = False
) -> pd.DataFrame:
    """A frame with one row per finished run under ``paths``, sorted by ``sort_by``.

    Raises ``CompareError`` for a missing path, no finished runs, or an unknown sort column.
    """
    if sort_by not in COLUMNS:
        raise CompareError(f"unknown sort column {sort_by!r}; choose one of {', '.join(COLUMNS)}")
    runs = find_runs(paths)
    if not runs:
        raise CompareError(
            f"no finished runs (with {METRICS_FILE}) under: {', '.join(map(str, paths))}"
        )
    frame = pd.DataFrame([load_run(run) for run in runs], columns=list(COLUMNS))
    frame = frame.sort_values(sort_by, ascending=ascending, na_position="last", kind="stable")
    return frame.reset_index(drop=True)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return str(value).replace("|", "\\|")


def to_markdown(frame: pd.DataFrame) -> str:
    """A GitHub markdown table of ``frame`` (floats to 4 decimals), without ``tabulate``."""
    numeric = [pd.api.types.is_numeric_dtype(frame[column]) for column in frame.columns]
    lines = [
        "| " + " | ".join(str(column) for column in frame.columns) + " |",
        "| " + " | ".join("---:" if num else "---" for num in numeric) + " |",
    ]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(value) for value in row) + " |")
    return "\n".join(lines) + "\n"


def to_table(frame: pd.DataFrame, width: int | None = None) -> str:
    """An aligned, human-readable table (rich), as plain text."""
    from rich.console import Console
    from rich.table import Table

    table = Table(show_lines=False)
    for column in frame.columns:
        numeric = pd.api.types.is_numeric_dtype(frame[column])
        table.add_column(str(column), justify="right" if numeric else "left", overflow="fold")
    for row in frame.itertuples(index=False):
        table.add_row(*(_cell(value).replace("\\|", "|") for value in row))
    buffer = io.StringIO()
    Console(file=buffer, width=width or 200, color_system=None, soft_wrap=False).print(table)
    return buffer.getvalue()


def render(frame: pd.DataFrame, fmt: str) -> str:
    if fmt == "csv":
        return frame.to_csv(index=False)
    if fmt == "markdown":
        return to_markdown(frame)
    if fmt == "table":
        return to_table(frame)
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hpa.compare", description="Compare finished hpa training runs."
    )
    parser.add_argument("paths", nargs="+", help="run directories, multirun folders or folders")
    parser.add_argument("--sort", default=VAL_F1_MACRO, help=f"column to sort by ({VAL_F1_MACRO})")
    parser.add_argument("--ascending", action="store_true", help="sort ascending")
    parser.add_argument("--format", choices=FORMATS, default="table", dest="fmt")
    parser.add_argument("--output", type=Path, help="write to this file (atomically)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI; returns the exit code (0, or 2 for a missing path / no runs / bad column)."""
    args = _parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        frame = compare_runs(args.paths, sort_by=args.sort, ascending=args.ascending)
    except CompareError as error:
        log.error("%s", error)
        return 2
    text = render(frame, args.fmt)
    if args.output is None:
        sys.stdout.write(text)
    else:
        write_atomic(args.output, lambda path: path.write_text(text))
        log.info("wrote %d runs to %s", len(frame), args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
