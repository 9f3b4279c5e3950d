"""Bad input is refused before a run starts, with one message naming the file or csv row.

Every case writes its own files: a small Kaggle-layout folder of 64 px PNGs, then one defect.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from cli import SMALL_SYNTHETIC_SET, run_module
from PIL import Image

from hpa.core.errors import HPAInputError
from hpa.core.labels import CHANNELS, HPA2018
from hpa.core.run_dir import RunDir
from hpa.data.datamodule import HPADataModule
from hpa.data.reader import read_channel, read_sample, tint
from hpa.data.synthetic import generate_dataset
from hpa.data.validate import checked_samples, find_problems
from hpa.models.checkpoints import check_checkpoint

IDS = [f"s{i}" for i in range(6)]


def write_png(path: Path, image: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), image)
    return path


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    """Six samples, four 32x32 grayscale PNG channels each, all good."""
    folder = tmp_path / "train"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for sample_id in IDS:
        for color in CHANNELS:
            write_png(folder / f"{sample_id}_{color}.png", rng.integers(0, 256, (32, 32), np.uint8))
    return folder


@pytest.mark.parametrize("mode", ["fast", "full"])
def test_good_files_pass(image_dir: Path, mode: str) -> None:
    assert find_problems(image_dir, IDS, mode) == []


def _only_problem(image_dir: Path, mode: str = "fast"):
    problems = find_problems(image_dir, IDS, mode)
    assert len(problems) == 1, problems
    return problems[0]


def test_missing_file_is_named(image_dir: Path) -> None:
    (image_dir / "s2_blue.png").unlink()
    problem = _only_problem(image_dir)
    assert problem.sample_id == "s2" and problem.file.endswith("s2_blue.png")
    assert problem.problem == "missing"


def test_missing_files_are_listed_and_counted(image_dir: Path) -> None:
    for sample_id in IDS:
        (image_dir / f"{sample_id}_yellow.png").unlink()
    with pytest.raises(HPAInputError) as error:
        checked_samples(image_dir, IDS)
    message = str(error.value)
    assert "6 channel file(s) missing" in message and "s0_yellow.png" in message
    assert "..." in message  # only the first five are listed
    assert "on_bad_image=skip" in message


@pytest.mark.parametrize("mode", ["fast", "full"])
def test_empty_file(image_dir: Path, mode: str) -> None:
    (image_dir / "s1_red.png").write_bytes(b"")
    problem = _only_problem(image_dir, mode)
    assert problem.file.endswith("s1_red.png") and "empty" in problem.problem


@pytest.mark.parametrize("mode", ["fast", "full"])
def test_truncated_png(image_dir: Path, mode: str) -> None:
    path = image_dir / "s3_green.png"
    path.write_bytes(path.read_bytes()[:-200])
    problem = _only_problem(image_dir, mode)
    assert problem.file.endswith("s3_green.png") and "truncated" in problem.problem


def test_truncated_jpeg_and_tiff(image_dir: Path) -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (32, 32), np.uint8)
    for extension in (".jpg", ".tif"):
        (image_dir / "s4_red.png").unlink(missing_ok=True)
        for old in image_dir.glob("s4_red.*"):
            old.unlink()
        path = image_dir / f"s4_red{extension}"
        Image.fromarray(image).save(path)  # PIL writes a TIFF's header before its pixels
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        problem = _only_problem(image_dir)
        assert problem.file.endswith(f"s4_red{extension}") and "truncated" in problem.problem


@pytest.mark.parametrize("mode", ["fast", "full"])
def test_not_an_image(image_dir: Path, mode: str) -> None:
    (image_dir / "s0_yellow.png").write_text("<html>404 not found</html>")
    problem = _only_problem(image_dir, mode)
    assert problem.file.endswith("s0_yellow.png")


@pytest.mark.parametrize("mode", ["fast", "full"])
def test_channels_of_different_sizes(image_dir: Path, mode: str) -> None:
    write_png(image_dir / "s5_blue.png", np.zeros((40, 32), np.uint8))
    problem = _only_problem(image_dir, mode)
    assert problem.sample_id == "s5" and "differ in size" in problem.problem
    assert "blue 32x40" in problem.problem


@pytest.mark.parametrize("mode", ["fast", "full"])
def test_colour_image_accepted_when_unambiguous_else_refused(image_dir: Path, mode: str) -> None:
    plane = np.random.default_rng(2).integers(0, 256, (32, 32), np.uint8)
    write_png(image_dir / "s0_red.png", np.dstack([plane] * 3))  # gray stored as RGB
    green_on_black = np.dstack([np.zeros_like(plane), plane, np.zeros_like(plane)])
    write_png(image_dir / "s0_green.png", green_on_black)  # the channel's own colour
    assert find_problems(image_dir, IDS, mode) == []
    write_png(image_dir / "s1_green.png", np.dstack([plane, 255 - plane, plane // 2]))
    problem = _only_problem(image_dir, mode)
    assert problem.file.endswith("s1_green.png") and "colour" in problem.problem


@pytest.mark.parametrize("mode", ["fast", "full"])
def test_tinted_jpgs_pass_and_a_wrong_tint_is_refused_as_the_reader_does(
    image_dir: Path, mode: str
) -> None:
    smooth = cv2.GaussianBlur(
        np.random.default_rng(3).integers(0, 256, (32, 32), np.uint8), (5, 5), 1
    )
    for color in CHANNELS:  # s0 as HPA publishes it: one tinted jpg per stain
        (image_dir / f"s0_{color}.png").unlink()
        assert cv2.imwrite(str(image_dir / f"s0_{color}.jpg"), tint(smooth, color))
    assert find_problems(image_dir, IDS, mode) == []
    assert read_sample(image_dir, "s0").shape == (4, 32, 32)
    wrong = image_dir / "s0_blue.jpg"
    assert cv2.imwrite(str(wrong), tint(smooth, "yellow"))  # the yellow stain as the blue file
    problem = _only_problem(image_dir, mode)
    assert problem.file == str(wrong) and "not in the blue stain" in problem.problem
    with pytest.raises(HPAInputError) as error:
        read_channel(wrong, color="blue")
    assert problem.problem in str(error.value)


def test_sixteen_bit_png_passes(image_dir: Path) -> None:
    write_png(image_dir / "s2_red.png", np.full((32, 32), 40000, np.uint16))
    assert find_problems(image_dir, IDS, "fast") == []


def test_skip_drops_bad_samples_and_reports_them(image_dir: Path) -> None:
    (image_dir / "s1_red.png").write_bytes(b"")
    (image_dir / "s4_blue.png").unlink()
    keep, skipped = checked_samples(image_dir, IDS, on_bad_image="skip")
    assert keep.tolist() == [True, False, True, True, False, True]
    assert list(skipped.columns) == ["Id", "file", "problem"]
    assert skipped["Id"].tolist() == ["s1", "s4"]


def test_unknown_policy_or_mode_is_refused(image_dir: Path) -> None:
    with pytest.raises(HPAInputError, match="on_bad_image"):
        checked_samples(image_dir, IDS, on_bad_image="ignore")
    with pytest.raises(HPAInputError, match="data.validate"):
        checked_samples(image_dir, IDS, mode="thorough")


# --- through the data module and the entry points ----------------------------------------------


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("set") / "data"
    generate_dataset(root, num_images=120, image_size=64, seed=0, progress=False)
    return root


def copy_of(small_set: Path, tmp_path: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(small_set, root)
    return root


def test_datamodule_skip_keeps_the_split_of_every_row(small_set: Path, tmp_path: Path) -> None:
    root = copy_of(small_set, tmp_path)
    ids = pd.read_csv(root / "train.csv")["Id"].tolist()
    (root / "train" / f"{ids[3]}_green.png").write_bytes(b"not a png")
    config = {"root": root, "image_size": 64, "on_bad_image": "skip", "num_workers": 0}
    datamodule = HPADataModule.from_config(config, HPA2018)
    datamodule.setup()
    assert ids[3] not in datamodule.ids and len(datamodule.ids) == len(ids) - 1
    sizes = sum(len(dataset) for dataset in datamodule.datasets.values())
    assert sizes == len(ids) - 1
    datamodule.save_split(tmp_path / "split.csv")
    assert len(pd.read_csv(tmp_path / "split.csv")) == len(ids)  # reusable once fixed
    assert datamodule.skipped_images["Id"].tolist() == [ids[3]]


def _train(root: Path, tmp_path: Path, *overrides: str, env=None):
    arguments = (f"hydra.run.dir={tmp_path / 'run'}", "data=hpa", f"data.root={root}")
    return run_module("hpa.train", *arguments, *SMALL_SYNTHETIC_SET[2:], *overrides, env=env)


def _assert_clean_refusal(result, *expected: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    for text in expected:
        assert text in output, output[-3000:]
    assert "Traceback" not in output


def test_bad_csv_row_stops_training_naming_the_line(small_set: Path, tmp_path: Path) -> None:
    root = copy_of(small_set, tmp_path)
    lines = (root / "train.csv").read_text().splitlines()
    sample_id = lines[5].split(",")[0]
    lines[5] = f"{sample_id},3 28"
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    result = _train(root, tmp_path)
    _assert_clean_refusal(result, f"{root / 'train.csv'}, line 6", "outside 0..27")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_missing_and_truncated_images_stop_training(small_set: Path, tmp_path: Path) -> None:
    root = copy_of(small_set, tmp_path)
    ids = pd.read_csv(root / "train.csv")["Id"].tolist()
    for sample_id in ids[:7]:
        (root / "train" / f"{sample_id}_yellow.png").unlink()
    truncated = root / "train" / f"{ids[10]}_red.png"
    truncated.write_bytes(truncated.read_bytes()[:100])
    result = _train(root, tmp_path)
    _assert_clean_refusal(
        result, "7 channel file(s) missing", f"{ids[0]}_yellow.png", str(truncated), "truncated"
    )
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow  # the default suite stays under 10 minutes; make test-slow runs it
def test_full_traceback_with_hydra_full_error(small_set: Path, tmp_path: Path) -> None:
    root = copy_of(small_set, tmp_path)
    (root / "train.csv").write_text("")
    result = _train(root, tmp_path, env={**os.environ, "HYDRA_FULL_ERROR": "1"})
    output = result.stdout + result.stderr
    assert result.returncode == 2 and "the file is empty" in output
    assert "Traceback" in output and "HPAInputError" in output


@pytest.mark.slow
def test_on_bad_image_skip_trains_and_writes_the_skipped_ids(
    small_set: Path, tmp_path: Path
) -> None:
    root = copy_of(small_set, tmp_path)
    ids = pd.read_csv(root / "train.csv")["Id"].tolist()
    (root / "train" / f"{ids[0]}_blue.png").write_bytes(b"")
    (root / "train" / f"{ids[1]}_red.png").unlink()
    result = _train(root, tmp_path, "data.on_bad_image=skip", "debug=fast", "model=cnn")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "skipping 2 of 120 sample(s)" in result.stdout + result.stderr
    skipped = pd.read_csv(tmp_path / "run" / RunDir.SKIPPED_IMAGES)
    assert skipped["Id"].tolist() == ids[:2]
    assert "empty" in skipped["problem"][0] and skipped["problem"][1] == "missing"


def test_unknown_config_key_is_refused_by_hydra(tmp_path: Path) -> None:
    result = run_module("hpa.train", f"hydra.run.dir={tmp_path}", "data.no_such_key=1")
    assert result.returncode != 0
    assert "no_such_key" in result.stderr and "Traceback" not in result.stderr


# --- checkpoints -------------------------------------------------------------------------------


def test_checkpoint_that_is_not_ours_is_refused(tmp_path: Path) -> None:
    random_file = tmp_path / "random.ckpt"
    random_file.write_bytes(np.random.default_rng(0).bytes(1000))
    with pytest.raises(HPAInputError, match="not a readable PyTorch checkpoint"):
        check_checkpoint(random_file)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"weight": torch.zeros(3)}, "epoch": 1}, foreign)
    with pytest.raises(HPAInputError, match="not a checkpoint of this project"):
        check_checkpoint(foreign)
    with pytest.raises(HPAInputError, match="does not exist"):
        check_checkpoint(tmp_path / "none.ckpt")


def test_eval_and_predict_refuse_a_foreign_checkpoint_cleanly(tmp_path: Path) -> None:
    foreign = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"weight": torch.zeros(3)}}, foreign)
    result = run_module("hpa.eval", f"ckpt_path={foreign}", f"hydra.run.dir={tmp_path / 'e'}")
    _assert_clean_refusal(result, str(foreign), "not a checkpoint of this project")
    not_torch = tmp_path / "notes.ckpt"
    not_torch.write_text("hello")
    (tmp_path / "test").mkdir()
    write_png(tmp_path / "test" / "a_green.png", np.zeros((8, 8), np.uint8))
    for color in ("red", "blue", "yellow"):
        write_png(tmp_path / "test" / f"a_{color}.png", np.zeros((8, 8), np.uint8))
    result = run_module(
        "hpa.predict",
        f"ckpt_path={not_torch}",
        f"data.root={tmp_path}",
        "data.image_size=8",
        f"hydra.run.dir={tmp_path / 'p'}",
    )
    _assert_clean_refusal(result, str(not_torch), "not a readable PyTorch checkpoint")
