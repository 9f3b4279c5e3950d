"""`hpa.compare` on a real two-job multirun of `python -m hpa.train` (made once per module)."""

from __future__ import annotations

import io
import json
import logging
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
from cli import SMALL_SYNTHETIC_SET, run_module, train_multirun

from hpa.compare import main
from hpa.core.labels import HPA2018
from hpa.core.metric_names import TEST_F1_MACRO, TEST_F1_SAMPLES, VAL_F1_MACRO, VAL_F1_SAMPLES
from hpa.evaluation.comparison import (
    COLUMNS,
    MINORITY_RECALL,
    compare_runs,
    find_runs,
    group_seeds,
    load_run,
    render,
    run_label,
    to_markdown,
)

METRICS = (VAL_F1_MACRO, VAL_F1_SAMPLES, TEST_F1_MACRO, TEST_F1_SAMPLES)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished multirun: jobs 0 and 1 differ only in ``optimizer.lr``."""
    root = tmp_path_factory.mktemp("compare")
    sweep_dir = root / "sweep"
    result = train_multirun(
        sweep_dir,
        root / "data",
        *SMALL_SYNTHETIC_SET,
        "debug=fast",
        "model=cnn",
        "optimizer.lr=1e-3,3e-3",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return sweep_dir


def job_metrics(job_dir: Path) -> dict:
    return json.loads((job_dir / "metrics.json").read_text())


def test_one_row_per_job_with_its_metrics(sweep: Path):
    frame = compare_runs([sweep])

    assert list(frame.columns) == list(COLUMNS)
    assert len(frame) == 2
    assert set(frame["model"]) == {"seed_cnn"}
    by_path = {
        Path(path).name: row
        for path, row in zip(frame["path"], frame.to_dict("records"), strict=True)
    }
    assert set(by_path) == {"0", "1"}
    for job, lr in (("0", "optimizer.lr=0.001"), ("1", "optimizer.lr=0.003")):
        row = by_path[job]
        assert lr in row["run"] and "debug=fast" in row["run"]
        assert "paths.data_dir" not in row["run"] and "hydra." not in row["run"]
        expected = job_metrics(sweep / job)
        for name in METRICS:
            assert row[name] == pytest.approx(expected[name])
    assert by_path["0"]["run"] != by_path["1"]["run"]


def test_minority_recall_is_the_mean_recall_of_the_seven_rarest_classes(sweep: Path):
    report = pd.read_csv(sweep / "0" / "test_per_class.csv")
    expected = report.set_index("class_id").loc[list(HPA2018.minority_classes), "recall"].mean()
    assert load_run(sweep / "0")[MINORITY_RECALL] == pytest.approx(expected)


def test_a_run_without_a_per_class_report_has_no_minority_recall(sweep: Path, tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(sweep / "0", run)
    (run / "test_per_class.csv").unlink()
    assert math.isnan(load_run(run)[MINORITY_RECALL])


def test_run_dir_and_duplicates_give_one_row(sweep: Path):
    assert find_runs([sweep / "0", sweep, sweep / "0"]) == [
        (sweep / "0").resolve(),
        (sweep / "1").resolve(),
    ]
    assert len(compare_runs([sweep / "1"])) == 1
    assert load_run(sweep / "1")["path"] == str(sweep / "1")


@pytest.mark.parametrize("metric", METRICS)
def test_sorting(sweep: Path, metric: str):
    descending = compare_runs([sweep], sort_by=metric)
    ascending = compare_runs([sweep], sort_by=metric, ascending=True)
    assert list(descending[metric]) == sorted(descending[metric], reverse=True)
    assert list(ascending[metric]) == sorted(ascending[metric])


def test_csv_and_markdown_outputs_parse_back(sweep: Path, tmp_path: Path):
    expected = compare_runs([sweep])

    csv_file = tmp_path / "out" / "runs.csv"
    assert main([str(sweep), "--format", "csv", "--output", str(csv_file)]) == 0
    parsed = pd.read_csv(csv_file)
    assert list(parsed.columns) == list(COLUMNS)
    assert list(parsed["path"]) == list(expected["path"])
    for name in METRICS:
        assert parsed[name].to_numpy() == pytest.approx(expected[name].to_numpy())

    md_file = tmp_path / "runs.md"
    assert main([str(sweep), "--format", "markdown", "--output", str(md_file)]) == 0
    text = md_file.read_text()
    assert text == to_markdown(expected)
    lines = text.strip().splitlines()
    assert len(lines) == 2 + len(expected)
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header == list(COLUMNS)
    for line, (_, row) in zip(lines[2:], expected.iterrows(), strict=True):
        cells = dict(
            zip(header, (cell.strip() for cell in line.strip("|").split("|")), strict=True)
        )
        assert cells["path"] == row["path"] and cells["run"] == row["run"]
        for name in METRICS:
            assert float(cells[name]) == pytest.approx(row[name], abs=5e-5)
    assert not list(tmp_path.glob("**/*.tmp"))


def test_table_goes_to_stdout(sweep: Path, capsys: pytest.CaptureFixture):
    assert main([str(sweep), "--sort", TEST_F1_MACRO, "--ascending"]) == 0
    out = capsys.readouterr().out
    for column in COLUMNS:
        assert column in out
    assert "optimizer.lr=0.001" in out and "optimizer.lr=0.003" in out


def test_unfinished_run_is_skipped_with_a_warning(
    sweep: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    folder = tmp_path / "runs"
    shutil.copytree(sweep / "0", folder / "finished")
    unfinished = folder / "unfinished"
    shutil.copytree(sweep / "1" / ".hydra", unfinished / ".hydra")

    with caplog.at_level(logging.WARNING, logger="hpa.evaluation.comparison"):
        frame = compare_runs([folder])
    assert list(frame["path"]) == [str((folder / "finished").resolve())]
    assert any(
        "unfinished" in r.getMessage() and str(unfinished) in r.getMessage() for r in caplog.records
    )

    with caplog.at_level(logging.WARNING, logger="hpa.evaluation.comparison"):
        assert main([str(unfinished)]) == 2


def test_missing_path_and_empty_folder_exit_2(
    sweep: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    missing = tmp_path / "nope"
    with caplog.at_level(logging.ERROR, logger="hpa.evaluation.comparison"):
        assert main([str(sweep), str(missing)]) == 2
    assert any(str(missing) in r.getMessage() for r in caplog.records)

    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="hpa.evaluation.comparison"):
        assert main([str(tmp_path)]) == 2
    assert any("no finished runs" in r.getMessage() for r in caplog.records)

    assert main([str(sweep), "--sort", "val/nope"]) == 2


def test_label_uses_experiment_and_drops_paths():
    overrides = [
        "experiment=seed_cnn_baseline",
        "data=hpa",
        "data.root=/data/hpa",
        "hydra.run.dir=/tmp/x",
        "paths.log_dir=/logs",
        "data.split_file=split.csv",
        "optimizer.lr=0.01",
    ]
    label = run_label({"task_name": "train"}, overrides)
    assert label == "seed_cnn_baseline data=hpa optimizer.lr=0.01"
    assert run_label({"task_name": "train"}, []) == "train"
    choices = {"experiment": "winners_densenet121"}
    assert run_label({"task_name": "train"}, ["seed=1"], choices) == "winners_densenet121 seed=1"


def test_a_second_stage_is_labelled_by_its_start_not_its_checkpoint_path():
    stages = [
        ["seed=0", "data.image_size=96", "model.init_from=/runs/0/checkpoints/best.ckpt"],
        ["seed=1", "data.image_size=96", "model.init_from=/runs/1/checkpoints/best.ckpt"],
    ]
    labels = {run_label({"task_name": "train"}, o, with_seed=False) for o in stages}
    assert labels == {"train data.image_size=96 model.init_from=CKPT"}


@pytest.mark.slow  # the default suite stays under 10 minutes; make test-slow runs it
def test_cli_subprocess(sweep: Path, tmp_path: Path):
    ok = run_module("hpa.compare", str(sweep), "--format", "csv")
    assert ok.returncode == 0, ok.stderr
    frame = pd.read_csv(io.StringIO(ok.stdout))
    assert len(frame) == 2 and list(frame.columns) == list(COLUMNS)

    missing = tmp_path / "does-not-exist"
    bad = run_module("hpa.compare", str(missing))
    assert bad.returncode == 2
    assert bad.stdout == ""
    error_lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert len(error_lines) == 1 and str(missing) in error_lines[0]


def test_runs_that_differ_only_in_their_seed_become_one_row_with_mean_and_sd(
    sweep: Path, tmp_path: Path
):
    """Job 0 as seed 0 and a copy of it as seed 1 (its seed and one metric edited), plus a real
    hpa.eval of the first: the evaluation groups by the seed and model of the run it evaluated."""
    job = sorted(path for path in sweep.iterdir() if (path / "metrics.json").is_file())[0]
    seed0, seed1 = tmp_path / "runs" / "a", tmp_path / "runs" / "b"
    shutil.copytree(job, seed0)
    shutil.copytree(job, seed1)
    config = seed1 / ".hydra" / "config.yaml"
    config.write_text(config.read_text().replace("\nseed: 0\n", "\nseed: 1\n"))
    (seed1 / ".hydra" / "overrides.yaml").write_text(
        (seed1 / ".hydra" / "overrides.yaml").read_text() + "- seed=1\n"
    )
    scores = job_metrics(seed1)
    scores[TEST_F1_MACRO] += 0.1
    (seed1 / "metrics.json").write_text(json.dumps(scores))

    grouped = group_seeds([tmp_path / "runs"], sort_by=TEST_F1_MACRO)
    assert len(grouped) == 1 and grouped.loc[0, "seeds"] == "0,1"
    macro = job_metrics(seed0)[TEST_F1_MACRO]
    assert grouped.loc[0, TEST_F1_MACRO] == pytest.approx(macro + 0.05)
    assert grouped.loc[0, f"{TEST_F1_MACRO} sd"] == pytest.approx(0.1 / math.sqrt(2))
    assert f"{macro + 0.05:.4f} ± 0.0707" in render(grouped, "markdown")

    evaluation = tmp_path / "evals" / "a"
    result = run_module(
        "hpa.eval",
        f"ckpt_path={seed0 / 'checkpoints' / 'best.ckpt'}",
        f"hydra.run.dir={evaluation}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    row = load_run(evaluation)
    assert (row["seed"], row["model"]) == (0, load_run(seed0)["model"])
    assert group_seeds([tmp_path / "evals"]).loc[0, "seeds"] == "0"
