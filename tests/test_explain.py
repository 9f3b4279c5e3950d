"""`python -m hpa.explain`: class activation maps of a checkpoint as PNGs in its run directory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cli import compose_entry, run_module
from PIL import Image

from hpa.core.errors import HPAInputError
from hpa.core.labels import HPA2018
from hpa.core.run_dir import RunDir
from hpa.data.reader import read_labels_csv
from hpa.integrations.cam import PANEL_DPI, PANEL_INCHES
from hpa.run import predicting
from hpa.run.explaining import PANEL_COLUMNS, explain

PANEL_WIDTH = round(PANEL_INCHES * PANEL_DPI)  # pixels of one picture of a PNG
ROW_HEIGHT = round((PANEL_INCHES + 0.6) * PANEL_DPI)


def explain_in_process(checkpoint: Path, output: Path, *overrides: str) -> list[Path]:
    cfg = compose_entry("explain", [f"ckpt_path={checkpoint}", *overrides], output)
    return explain(cfg)


def png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_cli_explains_the_first_test_images_of_the_run(small_trained_run, tmp_path: Path):
    checkpoint, _ = small_trained_run
    result = run_module(
        "hpa.explain", f"ckpt_path={checkpoint}", f"hydra.run.dir={tmp_path}", "num_images=2"
    )
    assert result.returncode == 0, result.stderr[-3000:]

    test_split = RunDir.of_checkpoint(checkpoint).test_ids()
    written = sorted(RunDir(tmp_path).explanations_dir.iterdir())
    expected = sorted(RunDir(tmp_path).explanation_png(i) for i in test_split[:2])
    assert written == expected
    for path in written:  # composite, green, and at least one predicted class
        width, height = png_size(path)
        assert width >= 3 * PANEL_WIDTH and height >= ROW_HEIGHT


def test_classes_true_and_all_draw_one_map_per_class(small_trained_run, tmp_path: Path):
    checkpoint, data_root = small_trained_run
    ids, labels = read_labels_csv(data_root / "train.csv", HPA2018)
    two_labels = next(i for i, row in enumerate(labels) if row.sum() == 2)
    sample_id = ids[two_labels]

    (true_png,) = explain_in_process(
        checkpoint, tmp_path / "true", f"ids=[{sample_id}]", "classes=true"
    )
    assert png_size(true_png) == (4 * PANEL_WIDTH, ROW_HEIGHT)  # composite, green, 2 maps

    (all_png,) = explain_in_process(
        checkpoint, tmp_path / "all", f"ids=[{sample_id}]", "classes=all", "method=gradcam++"
    )
    rows = -(-(2 + 28) // PANEL_COLUMNS)
    assert png_size(all_png) == (PANEL_COLUMNS * PANEL_WIDTH, rows * ROW_HEIGHT)
    assert all_png == RunDir(tmp_path / "all").explanation_png(sample_id)


def test_an_unlabelled_image_of_another_data_root(small_trained_run, tmp_path: Path):
    checkpoint, data_root = small_trained_run
    test_id = predicting.test_ids(data_root)[0]
    (png,) = explain_in_process(checkpoint, tmp_path, f"data.root={data_root}", f"ids=[{test_id}]")
    assert png.name == f"{test_id}.png" and png_size(png)[0] >= 3 * PANEL_WIDTH


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["ids=[no-such-image]"], r"unknown image id\(s\) no-such-image: not in .*train.csv"),
        (["method=lrp"], r"unknown class activation map method 'lrp'.*GradCAM"),
        (["classes=likely"], r"classes='likely': choose one of predicted, true, all"),
        (["target_layer=layer9"], r"model 'seed_cnn' has no layer 'layer9'"),
        (["device=tpu"], r"device='tpu': choose one of auto, cpu, cuda"),
        (["num_images=0"], r"num_images must be at least 1"),
    ],
)
def test_bad_input_is_refused_before_any_map(small_trained_run, tmp_path, overrides, message):
    checkpoint, _ = small_trained_run
    with pytest.raises(HPAInputError, match=message):
        explain_in_process(checkpoint, tmp_path, *overrides)
    assert not RunDir(tmp_path).explanations_dir.exists()


def test_true_classes_of_an_unlabelled_image_are_refused(small_trained_run, tmp_path: Path):
    checkpoint, data_root = small_trained_run
    test_id = predicting.test_ids(data_root)[0]
    with pytest.raises(HPAInputError, match=rf"classes=true needs labels, but {test_id} is a test"):
        explain_in_process(
            checkpoint, tmp_path, f"data.root={data_root}", f"ids=[{test_id}]", "classes=true"
        )


def test_a_checkpoint_without_its_run_needs_a_data_root_and_size(small_trained_run, tmp_path):
    checkpoint, data_root = small_trained_run
    moved = tmp_path / "moved.ckpt"
    moved.write_bytes(checkpoint.read_bytes())
    with pytest.raises(HPAInputError, match="image size of .*moved.ckpt is unknown"):
        explain_in_process(moved, tmp_path / "a")
    with pytest.raises(HPAInputError, match="data root of .* is unknown .*set data.root"):
        explain_in_process(moved, tmp_path / "b", "data.image_size=64")
    # with both, the first images of ROOT/test/ (no split to take test images from)
    written = explain_in_process(
        moved, tmp_path / "c", "data.image_size=64", f"data.root={data_root}", "num_images=2"
    )
    assert [path.stem for path in written] == list(predicting.test_ids(data_root)[:2])


def test_cli_exit_code_2_names_the_problem(small_trained_run, tmp_path: Path):
    checkpoint, _ = small_trained_run
    result = run_module(
        "hpa.explain", f"ckpt_path={checkpoint}", f"hydra.run.dir={tmp_path}", "method=gradcam+++"
    )
    assert result.returncode == 2
    assert "unknown class activation map method 'gradcam+++'" in result.stdout + result.stderr
    assert not RunDir(tmp_path).explanations_dir.exists()


def test_predicted_classes_are_those_of_the_thresholds(small_trained_run):
    from hpa.integrations import cam
    from hpa.models.checkpoints import load_module

    checkpoint, _ = small_trained_run
    module = load_module(checkpoint)
    probabilities = np.array([[0.9, 0.2, 0.7] + [0.0] * 25, [0.0] * 28], dtype=np.float32)
    module.set_class_thresholds(np.full(28, 0.5))
    first, second = cam.predicted_class_ids(module, probabilities)
    assert first.tolist() == [0, 2]  # most probable first
    assert second.tolist() == [0]  # ensure_one_label: the most probable (a tie: the first)
