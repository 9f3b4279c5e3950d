"""The notebooks run top to bottom (nbclient, a real kernel, cwd notebooks/) so they never rot."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from shared_data import hpa2018_dir, skip_reason

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def execute(name: str) -> nbformat.NotebookNode:
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": NOTEBOOKS}}
    )
    client.execute()
    return notebook


def outputs(notebook: nbformat.NotebookNode, output_type: str) -> list:
    return [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output_type in output.get("data", {})
    ]


@pytest.mark.parametrize("name", ["01_explore_data.ipynb", "02_compare_runs.ipynb"])
def test_notebooks_are_committed_without_outputs(name: str):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


@pytest.mark.slow
def test_explore_data_runs():
    # the notebook reads the real train.csv and shows the real PNGs, from where the tests look
    if (
        not (hpa2018_dir() / "train.csv").is_file()
        or not (hpa2018_dir() / "real_channels").is_dir()
    ):
        pytest.skip(skip_reason("train.csv and PNGs"))
    notebook = execute("01_explore_data.ipynb")
    # class counts, labels per image, co-occurrence, synthetic, real channels, composite, sampler
    assert len(outputs(notebook, "image/png")) >= 7
    assert "31,072 images" in "".join(
        output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", [])
    )


@pytest.mark.slow  # about 65 s: trains a two-job multirun, then runs the notebook
def test_compare_runs_trains_a_tiny_multirun_and_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    monkeypatch.delenv("HPA_RUNS", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the kernel trains its runs in a temporary folder
    notebook = execute("02_compare_runs.ipynb")
    # macro F1 bars, per-class heatmap, training curves, precision-recall curves
    assert len(outputs(notebook, "image/png")) == 4
    tables = outputs(notebook, "text/html")
    # the runs' table names what differs between the jobs (Hydra writes sweep values as True/False)
    assert tables and "data.oversample=true" in tables[0]["data"]["text/html"].lower()
    assert len(list(tmp_path.glob("hpa-compare-*/sweep/*/metrics.json"))) == 2
