"""The synthetic 2021 single-cell set: layout, cell truth, heterogeneous cells, safety on disk."""

from __future__ import annotations

import csv
import json
import os
import signal
import threading
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage.filters import threshold_otsu
from skimage.measure import label as connected_components
from skimage.segmentation import watershed

from hpa.core.errors import HPAInputError
from hpa.core.labels import CHANNELS, HPA2021
from hpa.data.synthetic.cells import (
    CELLS_CSV,
    MANIFEST_NAME,
    NEGATIVE,
    TRUTH_DIR,
    assign_cell_classes,
    draw_image_classes,
    ensure_cell_set,
    generate_cell_set,
    is_complete,
    read_manifest,
)

NUM_TRAIN, NUM_TEST, SIZES, SEED = 24, 4, (128, 160, 192), 5
NEGATIVE_FRACTION = 0.2


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="") as handle:
        header, *rows = list(csv.reader(handle))
    return header, rows


def class_ids(label: str) -> set[int]:
    return set(np.flatnonzero(HPA2021.parse(label)).tolist())


def read_gray(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, path
    return image


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def cell_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cells") / "hpa2021"
    returned = generate_cell_set(
        root, NUM_TRAIN, NUM_TEST, SIZES, SEED, NEGATIVE_FRACTION, progress=False
    )
    assert returned == root
    return root


@pytest.fixture(scope="module")
def images(cell_set: Path) -> dict[str, tuple[str, str]]:
    """{ID: (split, image Label)}; test images get the union of their cells' labels."""
    _, train_rows = read_csv(cell_set / "train.csv")
    _, submission_rows = read_csv(cell_set / "sample_submission.csv")
    found = {image_id: ("train", label) for image_id, label in train_rows}
    found |= {row[0]: ("test", "") for row in submission_rows}
    return found


@pytest.fixture(scope="module")
def cell_labels(cell_set: Path) -> dict[str, dict[int, set[int]]]:
    """{ID: {cell_id: class ids}} from cell_truth/cells.csv."""
    header, rows = read_csv(cell_set / TRUTH_DIR / CELLS_CSV)
    assert header == ["ID", "cell_id", "Label"]
    by_image: dict[str, dict[int, set[int]]] = defaultdict(dict)
    for image_id, cell_id, label in rows:
        assert int(cell_id) not in by_image[image_id], (image_id, cell_id)
        by_image[image_id][int(cell_id)] = class_ids(label)
    return dict(by_image)


@pytest.fixture(scope="module")
def masks(cell_set: Path, images: dict[str, tuple[str, str]]) -> dict[str, np.ndarray]:
    return {
        image_id: read_gray(cell_set / TRUTH_DIR / f"{image_id}_cells.png") for image_id in images
    }


# -- layout --------------------------------------------------------------------------------------


def test_root_holds_the_kaggle_2021_files_and_the_truth_apart(cell_set: Path) -> None:
    assert sorted(p.name for p in cell_set.iterdir()) == sorted(
        ["train.csv", "train", "test", "sample_submission.csv", TRUTH_DIR, MANIFEST_NAME]
    )
    assert sorted(p.name for p in cell_set.parent.iterdir()) == [cell_set.name]  # no temp dir
    assert is_complete(cell_set)


def test_train_csv_has_id_and_label_columns_with_uuid_ids(cell_set: Path) -> None:
    header, rows = read_csv(cell_set / "train.csv")
    assert header == ["ID", "Label"]
    assert len(rows) == NUM_TRAIN
    assert len({image_id for image_id, _ in rows}) == NUM_TRAIN
    for image_id, label in rows:
        assert str(uuid.UUID(image_id)) == image_id
        ids = [int(token) for token in label.split("|")]
        assert ids == sorted(set(ids)), label  # ascending, unique
        assert all(0 <= class_id <= 18 for class_id in ids), label


def test_sample_submission_lists_the_test_images_with_their_size(
    cell_set: Path, images: dict[str, tuple[str, str]]
) -> None:
    header, rows = read_csv(cell_set / "sample_submission.csv")
    assert header == ["ID", "ImageWidth", "ImageHeight", "PredictionString"]
    assert len(rows) == NUM_TEST
    for image_id, width, height, prediction in rows:
        assert prediction == ""
        green = read_gray(cell_set / "test" / f"{image_id}_green.png")
        assert green.shape == (int(height), int(width))
    train_ids = {image_id for image_id, (split, _) in images.items() if split == "train"}
    assert not train_ids & {row[0] for row in rows}


def test_every_channel_is_an_8_bit_grayscale_png_of_a_configured_size(
    cell_set: Path, images: dict[str, tuple[str, str]]
) -> None:
    sizes = set()
    for image_id, (split, _) in images.items():
        shapes = set()
        for color in CHANNELS:
            path = cell_set / split / f"{image_id}_{color}.png"
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
            plane = read_gray(path)
            assert plane.dtype == np.uint8 and plane.ndim == 2, path
            shapes.add(plane.shape)
        assert len(shapes) == 1
        (height, width) = shapes.pop()
        assert height == width and width in SIZES
        sizes.add(width)
    assert len(sizes) >= 2  # several sizes in one set
    for split, count in (("train", NUM_TRAIN), ("test", NUM_TEST)):
        assert len(list((cell_set / split).iterdir())) == 4 * count  # nothing else there


def test_manifest_records_the_settings(cell_set: Path) -> None:
    manifest = json.loads((cell_set / MANIFEST_NAME).read_text())
    assert manifest == read_manifest(cell_set)
    assert manifest["num_train"] == NUM_TRAIN and manifest["num_test"] == NUM_TEST
    assert manifest["sizes"] == list(SIZES) and manifest["seed"] == SEED
    assert manifest["negative_fraction"] == NEGATIVE_FRACTION
    assert isinstance(manifest["format_version"], int)


# -- cell truth ----------------------------------------------------------------------------------


def test_each_image_has_a_uint16_mask_of_its_size_numbering_the_cells_of_cells_csv(
    cell_set: Path,
    images: dict[str, tuple[str, str]],
    masks: dict[str, np.ndarray],
    cell_labels: dict[str, dict[int, set[int]]],
) -> None:
    assert set(cell_labels) == set(images)  # train and test images alike
    assert len(list((cell_set / TRUTH_DIR).iterdir())) == len(images) + 1  # masks + cells.csv
    for image_id, (split, _) in images.items():
        mask = masks[image_id]
        assert mask.dtype == np.uint16
        assert mask.shape == read_gray(cell_set / split / f"{image_id}_blue.png").shape
        cell_ids = sorted(cell_labels[image_id])
        assert cell_ids == list(range(1, len(cell_ids) + 1))
        assert np.unique(mask).tolist() == [0, *cell_ids]  # 0 background, every cell drawn


def test_cell_labels_are_subsets_of_the_image_label_which_is_their_union(
    images: dict[str, tuple[str, str]], cell_labels: dict[str, dict[int, set[int]]]
) -> None:
    for image_id, (split, label) in images.items():
        cells = cell_labels[image_id].values()
        union = set().union(*cells)
        if split == "train":
            assert class_ids(label) == union  # every image class shown by at least one cell
        for classes in cells:
            assert classes and all(0 <= class_id <= 18 for class_id in classes)
            assert classes == {NEGATIVE} or NEGATIVE not in classes
        has_negative_cell = any(classes == {NEGATIVE} for classes in cells)
        assert (NEGATIVE in union) == has_negative_cell


def test_cells_of_one_image_differ_and_negative_cells_exist(
    cell_labels: dict[str, dict[int, set[int]]],
) -> None:
    differing = [
        image_id
        for image_id, cells in cell_labels.items()
        if len({frozenset(classes) for classes in cells.values()}) >= 2
    ]
    assert differing
    negative_cells = sum(
        classes == {NEGATIVE} for cells in cell_labels.values() for classes in cells.values()
    )
    assert negative_cells >= 1


def test_negative_cells_are_dark_in_green_and_the_others_are_not(
    cell_set: Path,
    images: dict[str, tuple[str, str]],
    masks: dict[str, np.ndarray],
    cell_labels: dict[str, dict[int, set[int]]],
) -> None:
    negative_peaks, showing_peaks = [], []
    for image_id, (split, _) in images.items():
        green = read_gray(cell_set / split / f"{image_id}_green.png")
        for cell_id, classes in cell_labels[image_id].items():
            peak = int(green[masks[image_id] == cell_id].max())  # small spots count too
            (negative_peaks if classes == {NEGATIVE} else showing_peaks).append(peak)
    assert negative_peaks and showing_peaks
    assert max(negative_peaks) < 50  # a faint diffuse haze and camera noise at most (8-bit)
    assert min(showing_peaks) > max(negative_peaks)


def test_some_cells_touch_each_other_and_some_are_cut_by_the_border(
    masks: dict[str, np.ndarray],
) -> None:
    touching = border = 0
    for mask in masks.values():
        left, right = mask[:, :-1], mask[:, 1:]
        up, down = mask[:-1], mask[1:]
        touching += np.any((left != right) & (left > 0) & (right > 0))
        touching += np.any((up != down) & (up > 0) & (down > 0))
        edge = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
        border += np.any(edge > 0)
    assert touching >= 1
    assert border >= 1


def segment_by_watershed(red: np.ndarray, blue: np.ndarray, yellow: np.ndarray) -> np.ndarray:
    """The classical segmentation: Otsu nuclei in blue, grown over red + yellow by watershed."""
    smooth_blue = cv2.GaussianBlur(blue.astype(np.float32), (0, 0), 2.0)
    nuclei = connected_components(smooth_blue > threshold_otsu(smooth_blue))
    body = cv2.GaussianBlur(red.astype(np.float32) + yellow.astype(np.float32), (0, 0), 1.0)
    foreground = body > 0.5 * threshold_otsu(body)
    return watershed(-body, markers=nuclei, mask=foreground | (nuclei > 0))


def test_a_watershed_from_blue_nuclei_over_red_and_yellow_finds_the_true_cells(
    cell_set: Path, images: dict[str, tuple[str, str]], masks: dict[str, np.ndarray]
) -> None:
    overlaps = []
    for image_id, (split, _) in list(images.items())[:8]:
        red, blue, yellow = (
            read_gray(cell_set / split / f"{image_id}_{color}.png")
            for color in ("red", "blue", "yellow")
        )
        found = segment_by_watershed(red, blue, yellow)
        truth = masks[image_id]
        for cell_id in range(1, int(truth.max()) + 1):
            cell = truth == cell_id
            candidates = np.unique(found[cell])
            overlaps.append(
                max(
                    (np.sum(cell & (found == k)) / np.sum(cell | (found == k)) for k in candidates),
                    default=0.0,
                )
            )
    assert len(overlaps) >= 16
    assert np.median(overlaps) > 0.85  # intersection over union with the best-matching segment
    assert np.mean(np.array(overlaps) > 0.6) > 0.8


# -- the rule of heterogeneity -------------------------------------------------------------------


def test_image_classes_are_localisations_and_frequent_classes_come_first() -> None:
    rng = np.random.default_rng(0)
    draws = [draw_image_classes(rng) for _ in range(3000)]
    assert {len(classes) for classes in draws} == {1, 2, 3}
    assert all(list(classes) == sorted(set(classes)) for classes in draws)
    counts = Counter(class_id for classes in draws for class_id in classes)
    assert NEGATIVE not in counts and set(counts) <= set(range(18))
    names = HPA2021.class_names
    nucleoplasm, cytosol = names.index("Nucleoplasm"), names.index("Cytosol")
    spindle, aggresome = names.index("Mitotic spindle"), names.index("Aggresome")
    assert counts[nucleoplasm] > 5 * counts[spindle]
    assert counts[cytosol] > 5 * counts[aggresome]


@pytest.mark.parametrize("negative_fraction", [0.0, 0.3, 0.99])
def test_assigned_cells_show_every_image_class_and_nothing_else(negative_fraction: float) -> None:
    rng = np.random.default_rng(1)
    for _ in range(300):
        image_classes = draw_image_classes(rng)
        num_cells = int(rng.integers(1, 9))
        cells = assign_cell_classes(image_classes, num_cells, negative_fraction, rng)
        assert len(cells) == num_cells
        shown = {class_id for classes in cells for class_id in classes if class_id != NEGATIVE}
        assert shown == set(image_classes)
        for classes in cells:
            assert classes == (NEGATIVE,) or (classes and set(classes) <= set(image_classes))
        if negative_fraction == 0.0:
            assert all(classes != (NEGATIVE,) for classes in cells)


# -- determinism ---------------------------------------------------------------------------------


def test_the_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path: Path) -> None:
    settings = {"num_train": 4, "num_test": 1, "sizes": (96, 128), "progress": False}
    first = tree_bytes(generate_cell_set(tmp_path / "a", seed=11, **settings))
    second = tree_bytes(generate_cell_set(tmp_path / "b", seed=11, **settings))
    other = tree_bytes(generate_cell_set(tmp_path / "c", seed=12, **settings))
    assert first == second
    a_mask = next(name for name in first if name.endswith("_cells.png"))
    assert first[a_mask] == second[a_mask]
    assert first["train.csv"] == second["train.csv"]
    assert first["train.csv"] != other["train.csv"]
    assert not {data for name, data in first.items() if name.endswith(".png")} & {
        data for name, data in other.items() if name.endswith(".png")
    }


# -- reuse, refusal and atomicity ----------------------------------------------------------------

SMALL = {"num_train": 3, "sizes": (64, 96), "progress": False}


def test_ensure_reuses_a_matching_set_and_replaces_one_with_other_settings(tmp_path: Path) -> None:
    root = tmp_path / "cells"
    root.mkdir()  # an empty folder is fine to fill
    ensure_cell_set(root, seed=1, **SMALL)
    marker = root / "marker"
    marker.write_text("kept while the set is reused")
    assert ensure_cell_set(root, seed=1, **SMALL) == root
    assert marker.exists()
    ensure_cell_set(root, seed=2, **SMALL)
    assert not marker.exists()
    assert read_manifest(root)["seed"] == 2
    assert is_complete(root)


def test_ensure_regenerates_an_incomplete_set(tmp_path: Path) -> None:
    root = generate_cell_set(tmp_path / "cells", seed=0, **SMALL)
    a_mask = next((root / TRUTH_DIR).glob("*_cells.png"))
    a_mask.unlink()
    assert not is_complete(root)
    ensure_cell_set(root, seed=0, **SMALL)
    assert is_complete(root) and a_mask.is_file()


@pytest.mark.parametrize("foreign", ["real data", "a 2018 synthetic set", "a file"])
def test_ensure_refuses_what_is_not_a_cell_set_and_leaves_it_untouched(
    tmp_path: Path, foreign: str
) -> None:
    root = tmp_path / "data"
    if foreign == "a file":
        root.write_text("not a folder")
    else:
        (root / "train").mkdir(parents=True)
        (root / "train.csv").write_text("ID,Label\nabc,0\n")
        if foreign == "a 2018 synthetic set":
            (root / "synthetic.json").write_text("{}")
    before = tree_bytes(tmp_path)
    with pytest.raises(HPAInputError, match="refusing"):
        ensure_cell_set(root, seed=0, **SMALL)
    assert tree_bytes(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no temp dir left


@pytest.mark.parametrize(
    "bad",
    [{"sizes": ()}, {"sizes": (16,)}, {"negative_fraction": 1.0}, {"num_train": 0}, {"seed": -1}],
)
def test_bad_settings_are_refused_before_anything_is_written(tmp_path: Path, bad: dict) -> None:
    settings = {"num_train": 2, "sizes": (64,), "progress": False} | bad
    with pytest.raises(ValueError):
        generate_cell_set(tmp_path / "cells", **settings)
    assert list(tmp_path.iterdir()) == []


def test_a_leftover_temporary_sibling_is_not_a_set_and_does_not_get_in_the_way(
    tmp_path: Path,
) -> None:
    root = tmp_path / "cells"
    leftover = tmp_path / "cells.tmp-999999"  # what a killed generation leaves behind
    (leftover / "train").mkdir(parents=True)
    (leftover / "train.csv").write_text("ID,Label\n")
    assert not is_complete(root) and not is_complete(leftover)
    ensure_cell_set(root, seed=0, **SMALL)
    assert is_complete(root)
    assert len(read_csv(root / "train.csv")[1]) == SMALL["num_train"]


class Interrupted(Exception):
    """Raised by a signal handler in the middle of a generation, as Ctrl-C would be."""


def test_an_interrupted_generation_leaves_nothing_half_written(tmp_path: Path) -> None:
    root = tmp_path / "cells"
    seen_while_writing: list[tuple[str, int]] = []

    def interrupt(signum: int, frame: object) -> None:
        for entry in tmp_path.iterdir():
            images = entry / "train"
            seen_while_writing.append(
                (entry.name, len(list(images.iterdir())) if images.is_dir() else 0)
            )
        raise Interrupted

    previous = signal.signal(signal.SIGUSR1, interrupt)
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGUSR1))
    try:
        timer.start()
        with pytest.raises(Interrupted):
            generate_cell_set(root, num_train=100_000, sizes=(96,), progress=False)
    finally:
        timer.cancel()
        signal.signal(signal.SIGUSR1, previous)
    [(name, images_written)] = seen_while_writing  # only the temporary sibling, mid-way
    assert name == f"cells.tmp-{os.getpid()}"
    assert images_written > 0
    assert list(tmp_path.iterdir()) == []
