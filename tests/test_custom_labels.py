"""A user's own label set end to end: `labels=custom labels.names_file=NAMES` on a Kaggle-layout
set of 6 classes trains, evaluates, predicts, exports and explains with 6 classes everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli import compose_entry, run_module

from hpa.core.errors import HPAInputError
from hpa.core.metric_names import TEST
from hpa.core.run_dir import RunDir
from hpa.integrations.onnx_runtime import OnnxPredictor
from hpa.run.evaluating import evaluate
from hpa.run.explaining import explain
from hpa.run.exporting import export
from hpa.run.predicting import predict
from hpa.run.training import train

CLASS_NAMES = ["Nucleus", "Nucleoli", "Cytosol", "Membrane", "Mitochondria", "Vesicles"]


def _kaggle_layout_with_six_classes(root: Path) -> tuple[Path, Path]:
    """(data root, names file): a synthetic set whose 2018 labels are folded onto 6 classes
    (class c -> c mod 6), written as a user's own csv."""
    result = run_module(
        "hpa.data.synthetic", str(root), "--n", "120", "--size", "64", "--n-test", "8",
        "--no-progress",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(root / "train.csv", dtype=str)
    table["Target"] = [
        " ".join(str(i) for i in sorted({int(c) % 6 for c in target.split()}))
        for target in table["Target"]
    ]
    table.to_csv(root / "train.csv", index=False)
    names = root.parent / "classes.txt"
    names.write_text("\n".join(CLASS_NAMES) + "\n")
    return root, names


@pytest.fixture(scope="module")
def six_class_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunDir, Path, Path]:
    """(run, data root, names file) of one short training run on the 6-class set."""
    base = tmp_path_factory.mktemp("custom_labels")
    root, names = _kaggle_layout_with_six_classes(base / "data")
    run = base / "run"
    result = run_module(
        "hpa.train",
        "data=hpa",
        f"data.root={root}",
        "labels=custom",
        f"labels.names_file={names}",
        "data.image_size=64",
        "data.batch_size=16",
        "data.num_workers=0",
        f"data.cache_dir={base / 'cache'}",
        "model=cnn",
        "trainer.max_epochs=1",
        "logger=csv",
        f"hydra.run.dir={run}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return RunDir(run), root, names


def test_the_run_has_six_classes_everywhere(six_class_run) -> None:
    run, root, _ = six_class_run
    run_metrics = run.metrics()
    per_class = sorted(name for name in run_metrics if name.startswith(f"{TEST}/f1_class/"))
    assert per_class == [
        "test/f1_class/00_nucleus",
        "test/f1_class/01_nucleoli",
        "test/f1_class/02_cytosol",
        "test/f1_class/03_membrane",
        "test/f1_class/04_mitochondria",
        "test/f1_class/05_vesicles",
    ]
    predictions = run.test_predictions()
    assert list(predictions.columns) == ["Id", *CLASS_NAMES, "Target"]
    assert len(run.thresholds()) == 6
    assert run.label_set().class_names == tuple(CLASS_NAMES)
    assert list(run.test_per_class()["class_name"]) == CLASS_NAMES
    assert (run.report_dir / "precision_recall.png").is_file()


def test_class_counts_are_those_of_the_train_split(six_class_run) -> None:
    run, root, _ = six_class_run
    counts = run.class_counts()
    assert list(counts["class_name"]) == CLASS_NAMES
    split = run.split()
    train_ids = set(split.loc[split["split"] == "train", "Id"])
    table = pd.read_csv(root / "train.csv", dtype=str)
    expected = np.zeros(6, dtype=int)
    for target in table.loc[table["Id"].isin(train_ids), "Target"]:
        expected[[int(c) for c in target.split()]] += 1
    np.testing.assert_array_equal(counts["train_images"], expected)
    np.testing.assert_allclose(counts["train_rate"], expected / len(train_ids))
    # the default loss (focal + Lovasz) weighs no positives; the default oversampling weighs
    # each class (largest count / its count) ** 0.25, from these counts (1 for an absent class)
    np.testing.assert_array_equal(counts["pos_weight"], np.ones(6))
    present = expected > 0
    sampler_weight = np.ones(6)
    sampler_weight[present] = (expected.max() / expected[present]) ** 0.25
    np.testing.assert_allclose(counts["sampler_weight"], sampler_weight, rtol=1e-6)


def test_eval_predict_export_and_explain_take_the_classes_from_the_checkpoint(
    six_class_run, tmp_path: Path
) -> None:
    run, root, _ = six_class_run
    checkpoint = run.best_checkpoint
    evaluated = evaluate(compose_entry("eval", [f"ckpt_path={checkpoint}"], tmp_path / "eval"))
    assert len([name for name in evaluated if name.startswith("test/f1_class/")]) == 6
    assert evaluated["test/f1_macro"] == pytest.approx(run.metrics()["test/f1_macro"], abs=1e-6)

    submission = predict(
        compose_entry("predict", [f"ckpt_path={checkpoint}", f"data.root={root}"], tmp_path / "p")
    )
    assert len(submission) == 8
    predicted_ids = {int(c) for cell in submission["Predicted"] for c in cell.split()}
    assert predicted_ids and predicted_ids <= set(range(6))
    probabilities = pd.read_csv(tmp_path / "p" / RunDir.PROBABILITIES)
    assert list(probabilities.columns[1:]) == CLASS_NAMES

    onnx_path = export(compose_entry("export", [f"ckpt_path={checkpoint}"], tmp_path / "x"))
    predictor = OnnxPredictor(onnx_path)
    assert predictor.class_names == CLASS_NAMES and predictor.label_set == run.label_set()

    written = explain(
        compose_entry("explain", [f"ckpt_path={checkpoint}", "num_images=1"], tmp_path / "e")
    )
    assert len(written) == 1 and written[0].is_file()


def test_a_label_outside_the_names_file_is_refused_with_its_row(six_class_run, tmp_path) -> None:
    run, root, names = six_class_run
    bad_root = tmp_path / "bad"
    bad_root.mkdir()
    (bad_root / "train").symlink_to(root / "train")
    table = pd.read_csv(root / "train.csv", dtype=str)
    table.loc[5, "Target"] = "2 6"
    table.to_csv(bad_root / "train.csv", index=False)
    overrides = ["data=hpa", f"data.root={bad_root}", "labels=custom"]
    overrides += [f"labels.names_file={names}", "data.image_size=64"]
    with pytest.raises(HPAInputError, match="class id 6 is outside 0..5") as refused:
        train(compose_entry("train", overrides, tmp_path / "run"))
    message = str(refused.value)
    assert str(bad_root / "train.csv") in message and "line 7" in message  # the header is 1
    assert not (tmp_path / "run" / "checkpoints").exists()  # stopped before any training

    with pytest.raises(HPAInputError, match="class id 6 is outside 0..5"):
        evaluate(
            compose_entry(
                "eval",
                [f"ckpt_path={run.best_checkpoint}", "data=hpa", f"data.root={bad_root}",
                 "data.image_size=64"],
                tmp_path / "eval",
            )
        )  # fmt: skip
    assert json.loads((run.path / RunDir.LABELS).read_text())["name"] == "custom"
