"""Finished runs side by side: one row per run (the seed report's results table), or one row per
group of runs that differ only in their seed, with the mean and standard deviation of each metric.

A path is a run directory, a multirun folder or any folder: run directories (``RunDir.is_run``)
are searched recursively. A run with a config but no metrics is unfinished: it is skipped with a
warning. ``python -m hpa.compare`` is the command line (hpa/compare.py).
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd

from hpa.core import metric_names
from hpa.core.run_dir import RunDir
from hpa.evaluation.metrics import minority_recall

log = logging.getLogger(__name__)

MINORITY_RECALL = metric_names.TEST_RECALL_MINORITY
METRIC_COLUMNS = (*metric_names.HEADLINE, MINORITY_RECALL)
COLUMNS = ("run", "model", *METRIC_COLUMNS, "path")
SEEDS_COLUMN = "seeds"
FORMATS = ("table", "csv", "markdown")

# Overrides that say where things are, not what was trained: left out of a run's label.
_PATH_KEY_PREFIXES = ("hydra.", "paths.")
_PATH_KEY_SUFFIXES = ("dir", "root", "file", "path")
_SEED_KEY = "seed"
# Overrides naming the checkpoint a run started from: what was trained (a second stage), but its
# path differs from seed to seed, so the label keeps the key only.
_WEIGHT_SOURCE_KEYS = ("model.init_from",)
_WEIGHT_SOURCE = "CKPT"


class CompareError(Exception):
    """A user error of the compare CLI (missing path, no runs): exit code 2."""


def _candidate_dirs(root: Path) -> Iterable[RunDir]:
    if RunDir(root).is_run():
        yield RunDir(root)
    for config in root.rglob(RunDir.CONFIG):
        run_dir = config.parent.parent
        if run_dir != root:
            yield RunDir(run_dir)


def find_runs(paths: Sequence[str | Path]) -> list[Path]:
    """The finished run directories under ``paths``, sorted and without duplicates.

    Unfinished runs (a config but no metrics) are logged and skipped. Raises ``CompareError``
    for a path that does not exist.
    """
    found: set[Path] = set()
    for raw in paths:
        root = Path(raw)
        if not root.exists():
            raise CompareError(f"path does not exist: {root}")
        for run_dir in _candidate_dirs(root):
            if run_dir.is_finished():
                found.add(run_dir.path.resolve())
            else:
                log.warning("skipping unfinished run (no %s): %s", RunDir.METRICS, run_dir)
    return sorted(found)


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _is_path_override(override: str) -> bool:
    key = _override_key(override)
    return key.startswith(_PATH_KEY_PREFIXES) or key.endswith(_PATH_KEY_SUFFIXES)


def _experiment(overrides: list[str], choices: Mapping[str, str] | None) -> str | None:
    for override in overrides:
        key, _, value = override.partition("=")
        if key.lstrip("+") == "experiment" and value:
            return value
    experiment = (choices or {}).get("experiment")
    if experiment and experiment not in ("null", "None"):
        return str(experiment)
    return None


def run_label(
    config: Mapping,
    overrides: list[str],
    choices: Mapping[str, str] | None = None,
    with_seed: bool = True,
) -> str:
    """The experiment name (else ``task_name``), then the run's overrides that change what was
    trained (not where things are; ``model.init_from``'s checkpoint shows as ``CKPT``).
    ``with_seed=False`` leaves the seed out too: the label of
    the runs that differ only in their seed, shared by ``group_seeds`` and the W&B group."""
    name = _experiment(overrides, choices) or str(config.get("task_name", "run"))
    kept = [
        f"{_override_key(override)}={_WEIGHT_SOURCE}"
        if _override_key(override) in _WEIGHT_SOURCE_KEYS
        else override
        for override in overrides
        if not _is_path_override(override)
        and _override_key(override) != "experiment"
        and (with_seed or _override_key(override) != _SEED_KEY)
    ]
    return " ".join([name, *kept])


def _metric(run_metrics: dict, name: str) -> float:
    value = run_metrics.get(name)
    return float(value) if isinstance(value, (int, float)) else math.nan


def load_run(path: str | Path) -> dict:
    """One row of the comparison: ``run``, ``model``, the headline metrics, the minority recall,
    ``path``; plus the run's seed and its label without the seed (for ``group_seeds``)."""
    run_dir = RunDir(path)
    config = run_dir.config()
    overrides = run_dir.overrides()
    choices = run_dir.config_choices()
    run_metrics = run_dir.metrics()
    # an evaluation of one checkpoint (hpa.eval, hpa.average) takes its model and seed from the
    # run that trained it, so that evaluations of seeds 0, 1, 2 group like their trainings
    trained = _trained_run(config)
    if trained is not None:
        config = {**trained.config(), **config}
    model = config.get("model") or {}
    row = {
        "run": run_label(config, overrides, choices),
        "model": str(model.get("name", "")) if isinstance(model, Mapping) else "",
    }
    row.update({name: _metric(run_metrics, name) for name in metric_names.HEADLINE})
    has_report = run_dir.has(RunDir.TEST_PER_CLASS)
    minority = run_dir.label_set().minority_classes
    row[MINORITY_RECALL] = (
        minority_recall(run_dir.test_per_class(), minority) if has_report else math.nan
    )
    row["path"] = str(run_dir.path)
    row[_SEED_KEY] = config.get(_SEED_KEY)
    row["group"] = run_label(config, overrides, choices, with_seed=False)
    return row


def _trained_run(config: Mapping) -> RunDir | None:
    """The run directory of the one checkpoint that a run without a seed of its own evaluated."""
    checkpoint = config.get("ckpt_path")
    if config.get(_SEED_KEY) is not None or not isinstance(checkpoint, str):
        return None
    if not checkpoint.endswith(".ckpt"):
        return None
    trained = RunDir.of_checkpoint(checkpoint)
    return trained if trained.is_run() else None


def _seed_text(seed) -> str:
    """0 rather than 0.0 (a column of seeds with a missing one is float); "-" for no seed."""
    if seed is None or (isinstance(seed, float) and math.isnan(seed)):
        return "-"
    return str(int(seed)) if float(seed).is_integer() else str(seed)


def compare_runs(
    paths: Sequence[str | Path], sort_by: str = metric_names.VAL_F1_MACRO, ascending: bool = False
) -> pd.DataFrame:
    """A frame with one row per finished run under ``paths`` (``COLUMNS``), sorted by
    ``sort_by``.

    Raises ``CompareError`` for a missing path, no finished runs, or an unknown sort column.
    """
    if sort_by not in COLUMNS:
        raise CompareError(f"unknown sort column {sort_by!r}; choose one of {', '.join(COLUMNS)}")
    frame = _run_rows(paths)[list(COLUMNS)]
    frame = frame.sort_values(sort_by, ascending=ascending, na_position="last", kind="stable")
    return frame.reset_index(drop=True)


def _run_rows(paths: Sequence[str | Path]) -> pd.DataFrame:
    runs = find_runs(paths)
    if not runs:
        raise CompareError(
            f"no finished runs (with {RunDir.METRICS}) under: {', '.join(map(str, paths))}"
        )
    return pd.DataFrame([load_run(run) for run in runs])


def group_seeds(
    paths: Sequence[str | Path], sort_by: str = metric_names.VAL_F1_MACRO, ascending: bool = False
) -> pd.DataFrame:
    """One row per group of runs that differ only in their seed (the same label without the
    seed, and the same model): ``run`` (that label), ``model``, ``seeds`` (their seeds), each
    metric's mean over the group and its sample standard deviation (``<metric> sd``; NaN for a
    group of one run)."""
    if sort_by not in COLUMNS:
        raise CompareError(f"unknown sort column {sort_by!r}; choose one of {', '.join(COLUMNS)}")
    rows = _run_rows(paths)
    grouped = []
    for (label, model), members in rows.groupby(["group", "model"], sort=True):
        row = {
            "run": label,
            "model": model,
            SEEDS_COLUMN: ",".join(sorted(_seed_text(seed) for seed in members[_SEED_KEY])),
        }
        for name in METRIC_COLUMNS:
            row[name] = members[name].mean()
            row[f"{name} sd"] = members[name].std(ddof=1)
        grouped.append(row)
    frame = pd.DataFrame(grouped)
    frame = frame.sort_values(sort_by, ascending=ascending, na_position="last", kind="stable")
    return frame.reset_index(drop=True)


def per_class_f1_table(run_dirs: Sequence[str | Path], names: Sequence[str]) -> pd.DataFrame:
    """Test F1 of each class (columns, class names) for each run (rows, ``names``); the runs must
    share one label set."""
    label_sets = {RunDir(run).label_set() for run in run_dirs}
    if len(label_sets) > 1:
        raise CompareError(
            "per-class F1 of runs with different label sets: "
            + ", ".join(sorted(label_set.name for label_set in label_sets))
        )
    class_names = next(iter(label_sets)).class_names if label_sets else ()
    rows = [RunDir(run).test_per_class()["f1"].to_numpy() for run in run_dirs]
    return pd.DataFrame(rows, index=list(names), columns=list(class_names))


def distinct_labels(labels: Sequence[str]) -> list[str]:
    """Run labels without the overrides that every run shares (the first word, the experiment
    or task name, is kept): ``train a=1 b=2``, ``train a=1 b=3`` -> ``train b=2``,
    ``train b=3``."""
    words = [label.split() for label in labels]
    shared = set.intersection(*(set(w[1:]) for w in words)) if len(words) > 1 else set()
    return [" ".join(w[:1] + [x for x in w[1:] if x not in shared]) for w in words]


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


def _with_spread(frame: pd.DataFrame) -> pd.DataFrame:
    """Each metric with a ``<metric> sd`` column as one ``mean ± sd`` text column (a group of
    one run shows its value alone)."""
    frame = frame.copy()
    for name in [c for c in frame.columns if f"{c} sd" in frame.columns]:
        frame[name] = [
            _cell(float(mean)) + ("" if math.isnan(sd) else f" ± {sd:.4f}")
            for mean, sd in zip(frame[name], frame.pop(f"{name} sd"), strict=True)
        ]
    return frame


def render(frame: pd.DataFrame, fmt: str) -> str:
    """``frame`` as csv, a markdown table or an aligned text table; in the last two, a grouped
    frame (``group_seeds``) shows each metric as ``mean ± sd``."""
    if fmt == "csv":
        return frame.to_csv(index=False)
    if fmt == "markdown":
        return to_markdown(_with_spread(frame))
    if fmt == "table":
        return to_table(_with_spread(frame))
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
