"""The synthetic HPA generator: layout on disk, determinism, label statistics, motifs, safety."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest

from hpa.core.errors import HPAInputError
from hpa.core.labels import CHANNELS, HPA2018
from hpa.data.synthetic import (
    COMPARTMENTS,
    MANIFEST_NAME,
    MOTIF_COMPARTMENTS,
    MOTIFS,
    ensure_dataset,
    generate_dataset,
    is_complete,
    render_sample,
    render_sample_with_compartments,
    sample_labels,
)
from hpa.data.synthetic.labels import (
    KAGGLE_CLASS_COUNTS,
    KAGGLE_LABELS_PER_IMAGE,
    NUM_KAGGLE_TRAIN_IMAGES,
)

CLASS_NAMES, NUM_CLASSES = HPA2018.class_names, HPA2018.num_classes  # synthetic sets are 2018's

REPO_ROOT = Path(__file__).resolve().parents[1]
NUM_TRAIN, NUM_TEST, SIZE = 40, 5, 64


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="") as handle:
        header, *rows = list(csv.reader(handle))
    return header, rows


def one_hot(class_id: int | None) -> np.ndarray:
    row = np.zeros(NUM_CLASSES, np.uint8)
    if class_id is not None:
        row[class_id] = 1
    return row


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic") / "hpa"
    returned = generate_dataset(root, NUM_TRAIN, SIZE, seed=3, num_test=NUM_TEST, progress=False)
    assert returned == root
    return root


# -- layout --------------------------------------------------------------------------------------


def test_train_csv_lists_every_image_with_a_valid_target(small_set: Path) -> None:
    header, rows = read_csv(small_set / "train.csv")
    assert header == ["Id", "Target"]
    assert len(rows) == NUM_TRAIN
    ids = [sample_id for sample_id, _ in rows]
    assert len(set(ids)) == NUM_TRAIN
    for sample_id, target in rows:
        assert str(uuid.UUID(sample_id)) == sample_id
        vector = HPA2018.parse(target)
        assert vector.sum() >= 1
        assert target == " ".join(str(i) for i in np.flatnonzero(vector))  # ascending, no repeats


def test_every_channel_file_is_an_8_bit_grayscale_png_of_the_requested_size(
    small_set: Path,
) -> None:
    _, train_rows = read_csv(small_set / "train.csv")
    _, test_rows = read_csv(small_set / "test_labels.csv")
    expected = {("train", row[0]) for row in train_rows} | {("test", row[0]) for row in test_rows}
    for split, sample_id in expected:
        for color in CHANNELS:
            path = small_set / split / f"{sample_id}_{color}.png"
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
            image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            assert image.dtype == np.uint8 and image.shape == (SIZE, SIZE), path
    written = {p.name for p in (small_set / "train").iterdir()} | {
        p.name for p in (small_set / "test").iterdir()
    }
    assert len(written) == 4 * len(expected)  # nothing else in the image folders


def test_test_split_has_a_kaggle_sample_submission_and_hidden_labels(small_set: Path) -> None:
    submission_header, submission = read_csv(small_set / "sample_submission.csv")
    labels_header, labels = read_csv(small_set / "test_labels.csv")
    assert submission_header == ["Id", "Predicted"]
    assert labels_header == ["Id", "Target"]
    assert [row[1] for row in submission] == ["0"] * NUM_TEST
    assert [row[0] for row in submission] == [row[0] for row in labels]
    for _, target in labels:
        assert HPA2018.parse(target).sum() >= 1
    _, train_rows = read_csv(small_set / "train.csv")
    assert not {row[0] for row in labels} & {row[0] for row in train_rows}


def test_manifest_records_the_parameters_and_no_temporary_directory_is_left(
    small_set: Path,
) -> None:
    manifest = json.loads((small_set / MANIFEST_NAME).read_text())
    assert manifest["num_images"] == NUM_TRAIN
    assert manifest["image_size"] == SIZE
    assert manifest["seed"] == 3
    assert manifest["num_test"] == NUM_TEST
    assert isinstance(manifest["format_version"], int)
    assert is_complete(small_set)
    assert [p.name for p in small_set.parent.iterdir()] == [small_set.name]


# -- determinism ---------------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_files_and_another_seed_differs(tmp_path: Path) -> None:
    first = tree_bytes(generate_dataset(tmp_path / "a", 6, 64, seed=11, num_test=2, progress=False))
    second = tree_bytes(
        generate_dataset(tmp_path / "b", 6, 64, seed=11, num_test=2, progress=False)
    )
    other = tree_bytes(generate_dataset(tmp_path / "c", 6, 64, seed=12, num_test=2, progress=False))
    assert first == second
    assert len(first) == 6 * 4 + 2 * 4 + 4  # images + train.csv, 2 test csvs, manifest
    assert first["train.csv"] != other["train.csv"]
    first_images = {data for name, data in first.items() if name.endswith(".png")}
    other_images = {data for name, data in other.items() if name.endswith(".png")}
    assert not first_images & other_images


def test_each_image_depends_only_on_seed_and_index(tmp_path: Path) -> None:
    small = tree_bytes(generate_dataset(tmp_path / "small", 3, 64, seed=5, progress=False))
    large = tree_bytes(generate_dataset(tmp_path / "large", 7, 64, seed=5, progress=False))
    images = {name: data for name, data in small.items() if name.startswith("train/")}
    assert len(images) == 12
    assert all(large[name] == data for name, data in images.items())
    assert large["train.csv"].startswith(small["train.csv"])


# -- labels --------------------------------------------------------------------------------------


def test_sampled_labels_follow_the_real_class_frequencies() -> None:
    labels = sample_labels(50_000, np.random.default_rng(0))
    assert labels.shape == (50_000, NUM_CLASSES) and labels.dtype == np.uint8
    assert set(np.unique(labels)) <= {0, 1}
    frequency = labels.mean(axis=0)
    real = np.asarray(KAGGLE_CLASS_COUNTS) / NUM_KAGGLE_TRAIN_IMAGES
    for class_id, count in enumerate(KAGGLE_CLASS_COUNTS):
        if count > 500:
            assert frequency[class_id] == pytest.approx(real[class_id], rel=0.15), CLASS_NAMES[
                class_id
            ]
    rarest = [class_id for class_id, count in enumerate(KAGGLE_CLASS_COUNTS) if count < 60]
    assert rarest == [8, 9, 10, 15, 27]
    assert np.all(frequency[rarest] < 0.004)
    assert frequency[rarest].sum() > 0  # rare, not absent
    assert frequency.argmax() == 0  # Nucleoplasm, then Cytosol, as in the real data
    assert np.argsort(frequency)[-2] == 25


def test_sampled_labels_follow_the_real_labels_per_image_distribution() -> None:
    per_image = sample_labels(20_000, np.random.default_rng(1)).sum(axis=1)
    assert per_image.min() >= 1
    total = sum(KAGGLE_LABELS_PER_IMAGE.values())
    for size, count in KAGGLE_LABELS_PER_IMAGE.items():
        assert np.mean(per_image == size) == pytest.approx(count / total, abs=0.012)


# -- images --------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [128, 256, 512])
def test_render_sample_gives_four_uint8_channels_at_any_size(size: int) -> None:
    image = render_sample(np.ones(NUM_CLASSES, np.uint8), size, np.random.default_rng(size))
    assert image.shape == (4, size, size) and image.dtype == np.uint8
    for plane in image:  # every stain shows structure, none is saturated everywhere
        assert plane.max() > 60 and np.median(plane) < 200


def green_weighted_blue(image: np.ndarray) -> float:
    """Mean nucleus stain under the green signal: high when green sits in nuclei."""
    green = image[1].astype(np.float64)
    signal = np.clip(green - np.median(green), 0.0, None)
    return float((signal * image[2]).sum() / signal.sum())


def test_nucleoplasm_lies_in_nuclei_and_plasma_membrane_outside_them() -> None:
    for seed in range(4):
        nucleoplasm = render_sample(one_hot(0), 128, np.random.default_rng(seed))
        membrane = render_sample(one_hot(21), 128, np.random.default_rng(seed))
        blue_under_nucleoplasm = green_weighted_blue(nucleoplasm)
        blue_under_membrane = green_weighted_blue(membrane)
        assert blue_under_nucleoplasm > 3 * blue_under_membrane
        nuclei = nucleoplasm[2] > 0.5 * np.percentile(nucleoplasm[2], 99)
        green = nucleoplasm[1].astype(np.float64) - np.median(nucleoplasm[1])
        assert green[nuclei].clip(0).sum() > 0.6 * green.clip(0).sum()


def test_every_class_motif_lights_up_the_green_channel_and_no_label_leaves_it_dark() -> None:
    for class_id in range(NUM_CLASSES):
        green = render_sample(one_hot(class_id), 128, np.random.default_rng(class_id))[1]
        bright = np.count_nonzero(green > np.median(green) + 40)
        assert bright >= 5, CLASS_NAMES[class_id]
    dark = render_sample(one_hot(None), 128, np.random.default_rng(0))[1]
    assert np.count_nonzero(dark > np.median(dark) + 40) == 0


def test_render_sample_rejects_a_bad_label_row_or_size() -> None:
    with pytest.raises(ValueError, match="28"):
        render_sample(np.ones(5, np.uint8), 128, np.random.default_rng(0))
    with pytest.raises(ValueError, match="image size"):
        render_sample(one_hot(0), 8, np.random.default_rng(0))


def test_motif_table_covers_every_class_name_exactly_once() -> None:
    assert sorted(MOTIFS) == sorted(CLASS_NAMES)
    assert len(set(MOTIFS.values())) == NUM_CLASSES  # no motif serves two classes
    assert sorted(MOTIF_COMPARTMENTS) == sorted(CLASS_NAMES)
    assert set(MOTIF_COMPARTMENTS.values()) <= set(COMPARTMENTS)


# -- compartments --------------------------------------------------------------------------------


def test_compartments_come_with_the_very_pixels_of_render_sample() -> None:
    labels = sample_labels(1, np.random.default_rng(0))[0]
    for size in (48, 128):
        image, masks = render_sample_with_compartments(labels, size, np.random.default_rng(7))
        assert np.array_equal(image, render_sample(labels, size, np.random.default_rng(7)))
        assert list(masks) == list(COMPARTMENTS)
        for name, mask in masks.items():
            assert mask.dtype == bool and mask.shape == image.shape[1:], name
            assert mask.any(), name
        nucleus, cytoplasm, cell = masks["nucleus"], masks["cytoplasm"], masks["cell"]
        assert not (nucleus & cytoplasm).any()
        assert np.array_equal(nucleus | cytoplasm, cell)
        assert not (masks["nucleoli"] & ~nucleus).any()
        assert not (masks["cell_membrane"] & ~cell).any()


def test_nucleus_mask_covers_the_bright_blue_pixels() -> None:
    for seed in range(4):
        image, masks = render_sample_with_compartments(
            np.ones(NUM_CLASSES, np.uint8), 128, np.random.default_rng(seed)
        )
        blue = image[2]
        bright = blue > 0.5 * np.percentile(blue, 99)
        assert np.count_nonzero(bright & masks["nucleus"]) > 0.95 * np.count_nonzero(bright)
        assert blue[masks["nucleus"]].mean() > 4 * blue[~masks["nucleus"]].mean()


def test_each_class_green_is_densest_in_the_compartment_of_its_motif() -> None:
    for class_id, class_name in enumerate(CLASS_NAMES):
        image, masks = render_sample_with_compartments(
            one_hot(class_id), 128, np.random.default_rng(class_id)
        )
        green = image[1].astype(np.float64)
        excess = np.clip(green - np.median(green), 0.0, None)
        inside = masks[MOTIF_COMPARTMENTS[class_name]]
        assert excess[inside].mean() > 2 * excess[~inside].mean(), class_name


# -- completeness and safety ---------------------------------------------------------------------


def test_leftover_temporary_directory_is_not_a_dataset(tmp_path: Path) -> None:
    root = tmp_path / "hpa"
    leftover = tmp_path / "hpa.tmp-999999"
    (leftover / "train").mkdir(parents=True)
    (leftover / "train.csv").write_text("Id,Target\n")
    assert not is_complete(root) and not is_complete(leftover)
    ensure_dataset(root, 3, 48, seed=0, progress=False)
    assert is_complete(root)
    assert len(read_csv(root / "train.csv")[1]) == 3


def test_missing_or_broken_manifest_or_train_csv_means_incomplete(tmp_path: Path) -> None:
    root = generate_dataset(tmp_path / "hpa", 2, 48, progress=False)
    manifest = (root / MANIFEST_NAME).read_text()
    (root / MANIFEST_NAME).write_text(manifest[: len(manifest) // 2])  # truncated write
    assert not is_complete(root)
    (root / MANIFEST_NAME).unlink()
    assert not is_complete(root)
    (root / MANIFEST_NAME).write_text(manifest)
    (root / "train.csv").unlink()
    assert not is_complete(root)
    ensure_dataset(root, 2, 48, seed=0, progress=False)  # has a manifest: synthetic, replaced
    assert is_complete(root)


def test_ensure_dataset_reuses_a_matching_set_and_regenerates_a_different_one(
    tmp_path: Path,
) -> None:
    root = tmp_path / "hpa"
    (root).mkdir()  # an empty directory is fine to fill
    ensure_dataset(root, 3, 48, seed=1, progress=False)
    marker = root / "marker"
    marker.write_text("kept while the set is reused")
    ensure_dataset(root, 3, 48, seed=1, progress=False)
    assert marker.exists()
    ensure_dataset(root, 4, 48, seed=2, progress=False)
    assert not marker.exists()
    assert json.loads((root / MANIFEST_NAME).read_text())["seed"] == 2
    assert len(read_csv(root / "train.csv")[1]) == 4


def test_a_non_empty_directory_without_manifest_is_refused_and_left_untouched(
    tmp_path: Path,
) -> None:
    root = tmp_path / "real_data"
    (root / "train").mkdir(parents=True)
    (root / "train.csv").write_text("Id,Target\nabc,0\n")
    with pytest.raises(HPAInputError, match="refusing") as error:
        ensure_dataset(root, 2, 48, seed=0, progress=False)
    assert MANIFEST_NAME in str(error.value)
    assert (root / "train.csv").read_text() == "Id,Target\nabc,0\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["real_data"]  # no temp dir left


# -- command line --------------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "hpa.data.synthetic", *args, "--no-progress"]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)


def test_cli_generates_then_reuses_and_refuses_real_data(tmp_path: Path) -> None:
    root = tmp_path / "cli"
    arguments = (str(root), "--n", "3", "--size", "48", "--seed", "4", "--n-test", "2")
    first = run_cli(*arguments)
    assert first.returncode == 0, first.stderr
    assert json.loads((root / MANIFEST_NAME).read_text())["num_test"] == 2
    assert len(read_csv(root / "train.csv")[1]) == 3
    assert len(list((root / "test").glob("*.png"))) == 2 * 4

    again = run_cli(*arguments)
    assert again.returncode == 0 and "existing" in again.stderr

    real = tmp_path / "real"
    real.mkdir()
    (real / "train.csv").write_text("Id,Target\n")
    refused = run_cli(str(real), "--n", "3")
    assert refused.returncode != 0
    assert "refusing" in refused.stderr and "Traceback" not in refused.stderr
