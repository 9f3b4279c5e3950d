from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from shared_data import KaggleTrainCsv

from hpa.core.errors import HPAInputError
from hpa.core.labels import CHANNELS, HPA2018, HPA2021
from hpa.data.reader import (
    find_channel_file,
    read_channel,
    read_ids_csv,
    read_labels_csv,
    read_sample,
    tint,
)
from hpa.data.synthetic.labels import KAGGLE_CLASS_COUNTS, KAGGLE_LABELS_PER_IMAGE
from hpa.data.validate import checked_samples, find_problems


def smooth_image(height: int = 64, width: int = 64, seed: int = 0) -> np.ndarray:
    """A uint8 image with structure (smooth enough for JPEG to keep it close)."""
    noise = np.random.default_rng(seed).integers(0, 256, (height, width)).astype(np.uint8)
    return cv2.GaussianBlur(noise, (7, 7), 2)


def write_image(path: Path, image: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), image), f"test setup could not write {path}"
    return path


def write_text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- channel decoding on files written here ----------------------------------------------------


def test_8bit_png_reads_back_exactly(tmp_path: Path) -> None:
    image = smooth_image()
    decoded = read_channel(write_image(tmp_path / "a_red.png", image))
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, image)


def test_jpeg_reads_back_close(tmp_path: Path) -> None:
    image = smooth_image()
    decoded = read_channel(write_image(tmp_path / "a_red.jpg", image))
    assert decoded.dtype == np.uint8 and decoded.shape == image.shape
    assert np.abs(decoded.astype(int) - image).mean() < 3


@pytest.mark.parametrize("extension", [".png", ".tif", ".tiff"])
def test_16bit_image_is_scaled_to_8_bits(tmp_path: Path, extension: str) -> None:
    every_16bit_value = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    decoded = read_channel(write_image(tmp_path / f"a_green{extension}", every_16bit_value))
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, np.round(every_16bit_value / 257).astype(np.uint8))
    assert decoded[0, 0] == 0 and decoded[-1, -1] == 255
    # An 8-bit image expanded to 16 bits (v * 257) comes back exactly.
    expanded = (np.arange(256, dtype=np.uint16) * 257).reshape(16, 16)
    decoded_expanded = read_channel(write_image(tmp_path / f"b_green{extension}", expanded))
    np.testing.assert_array_equal(decoded_expanded, np.arange(256).reshape(16, 16))
    assert np.abs(decoded.astype(int) - (every_16bit_value >> 8)).max() <= 1


def test_float_tiff_is_scaled_from_unit_range_or_its_max(tmp_path: Path) -> None:
    unit = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    decoded = read_channel(write_image(tmp_path / "unit_blue.tif", unit))
    np.testing.assert_array_equal(decoded, np.rint(unit * 255).astype(np.uint8))
    large = unit * 1000
    decoded_large = read_channel(write_image(tmp_path / "large_blue.tif", large))
    np.testing.assert_array_equal(decoded_large, np.rint(large / 1000 * 255).astype(np.uint8))


def test_colour_png_with_equal_planes_is_accepted(tmp_path: Path) -> None:
    plane = smooth_image()
    path = write_image(tmp_path / "a_red.png", np.dstack([plane, plane, plane]))
    np.testing.assert_array_equal(read_channel(path), plane)


@pytest.mark.parametrize("planes", [3, 4])
def test_colour_coded_png_with_one_non_zero_plane_is_accepted(tmp_path: Path, planes: int) -> None:
    plane = smooth_image()
    colour = np.zeros((*plane.shape, planes), dtype=np.uint8)
    colour[:, :, 1] = plane  # green-on-black, as HPA colour-codes its channel files
    if planes == 4:
        colour[:, :, 3] = 255  # opaque alpha is ignored
    path = write_image(tmp_path / "a_green.png", colour)
    np.testing.assert_array_equal(read_channel(path), plane)


def test_ambiguous_colour_png_is_refused_naming_the_file(tmp_path: Path) -> None:
    colour = np.dstack([smooth_image(seed=1), smooth_image(seed=2), smooth_image(seed=3)])
    path = write_image(tmp_path / "a_yellow.png", colour)
    with pytest.raises(HPAInputError, match="colour") as error:
        read_channel(path)
    assert str(path) in str(error.value)


def test_resizing_shrinks_by_area_and_grows(tmp_path: Path) -> None:
    blocks = np.arange(32 * 32, dtype=np.uint8).reshape(32, 32)
    image = np.kron(blocks, np.ones((2, 2), dtype=np.uint8))  # 64x64 of constant 2x2 blocks
    path = write_image(tmp_path / "a_red.png", image)
    np.testing.assert_array_equal(read_channel(path, 32), blocks)  # area averaging is exact here
    grown = read_channel(path, 100)
    assert grown.shape == (100, 100) and grown.dtype == np.uint8
    np.testing.assert_array_equal(read_channel(path, 64), image)
    with pytest.raises(ValueError, match="positive"):
        read_channel(path, 0)


def test_missing_channel_file_error_names_the_expected_file(tmp_path: Path) -> None:
    with pytest.raises(HPAInputError) as error:
        find_channel_file(tmp_path, "abc", "yellow")
    assert str(tmp_path / "abc_yellow.png") in str(error.value)


def test_find_channel_file_tries_every_extension(tmp_path: Path) -> None:
    path = write_image(tmp_path / "abc_blue.tiff", smooth_image())
    assert find_channel_file(tmp_path, "abc", "blue") == path
    png = write_image(tmp_path / "abc_blue.png", smooth_image())
    assert find_channel_file(tmp_path, "abc", "blue") == png  # .png is tried first


def test_empty_truncated_and_non_image_files_are_refused_naming_the_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty_red.png"
    empty.write_bytes(b"")
    whole_png = write_image(tmp_path / "whole_red.png", smooth_image(256, 256)).read_bytes()
    truncated = tmp_path / "truncated_red.png"
    truncated.write_bytes(whole_png[: len(whole_png) // 2])
    not_an_image = write_text(tmp_path / "text_red.png", "Id,Target\n")
    for path in (empty, truncated, not_an_image):
        with pytest.raises(HPAInputError, match="cannot decode") as error:
            read_channel(path)
        assert str(path) in str(error.value)


# --- samples -----------------------------------------------------------------------------------


def write_sample(
    image_dir: Path, sample_id: str, extensions: dict[str, str]
) -> dict[str, np.ndarray]:
    image_dir.mkdir(parents=True, exist_ok=True)
    planes = {}
    for seed, color in enumerate(CHANNELS):
        planes[color] = smooth_image(seed=seed) // 4 + 60 * seed  # distinct levels per channel
        write_image(image_dir / f"{sample_id}_{color}{extensions[color]}", planes[color])
    return planes


def test_read_sample_stacks_rgby_across_extensions(tmp_path: Path) -> None:
    extensions = {"red": ".png", "green": ".tif", "blue": ".png", "yellow": ".tiff"}
    planes = write_sample(tmp_path / "train", "s1", extensions)
    sample = read_sample(tmp_path / "train", "s1", None)
    assert sample.shape == (4, 64, 64) and sample.dtype == np.uint8
    for index, color in enumerate(CHANNELS):
        np.testing.assert_array_equal(sample[index], planes[color])
    resized = read_sample(tmp_path / "train", "s1", 32)
    assert resized.shape == (4, 32, 32)


def test_read_sample_refuses_channels_of_different_sizes(tmp_path: Path) -> None:
    write_sample(tmp_path, "s1", dict.fromkeys(CHANNELS, ".png"))
    write_image(tmp_path / "s1_blue.png", smooth_image(48, 48))
    with pytest.raises(HPAInputError, match="differ in size") as error:
        read_sample(tmp_path, "s1", None)
    assert "s1" in str(error.value) and "blue 48x48" in str(error.value)
    assert read_sample(tmp_path, "s1", 40).shape == (4, 40, 40)


def test_missing_channel_files_are_listed_and_counted(tmp_path: Path) -> None:
    # the validation pass (hpa.data.validate) is what finds missing files before a run
    write_sample(tmp_path, "complete", dict.fromkeys(CHANNELS, ".png"))
    write_sample(tmp_path, "partial", dict.fromkeys(CHANNELS, ".jpg"))
    (tmp_path / "partial_green.jpg").unlink()
    (tmp_path / "partial_yellow.jpg").unlink()
    expected = [str(tmp_path / "partial_green.png"), str(tmp_path / "partial_yellow.png")]
    problems = find_problems(tmp_path, ["complete", "partial"])
    assert [p.file for p in problems if p.problem == "missing"] == expected
    checked_samples(tmp_path, ["complete"])
    with pytest.raises(HPAInputError, match="2 channel file") as error:
        checked_samples(tmp_path, ["complete", "partial"])
    assert expected[0] in str(error.value) and expected[1] in str(error.value)
    with pytest.raises(HPAInputError, match="does not exist"):
        checked_samples(tmp_path / "nowhere", ["complete"])


# --- real competition PNGs ---------------------------------------------------------------------


def real_channel_files(real_channels_dir: Path) -> list[dict[str, str]]:
    with open(real_channels_dir / "labels.csv", newline="") as file:
        return list(csv.DictReader(file))


def test_all_real_competition_pngs_decode(real_channels_dir: Path) -> None:
    rows = real_channel_files(real_channels_dir)
    assert len(rows) == 48
    for row in rows:
        path = real_channels_dir / row["file"]
        decoded = read_channel(path)
        assert decoded.shape == (512, 512) and decoded.dtype == np.uint8, path
        assert decoded.std() > 1 and len(np.unique(decoded)) > 20, f"{path} looks blank"
        np.testing.assert_array_equal(decoded, np.asarray(Image.open(path)), err_msg=str(path))


def test_real_channels_stack_into_a_sample(real_channels_dir: Path, tmp_path: Path) -> None:
    rows = real_channel_files(real_channels_dir)
    source_of = {
        color: next(real_channels_dir / row["file"] for row in rows if row["channel"] == color)
        for color in CHANNELS
    }
    image_dir = tmp_path / "train"
    image_dir.mkdir()
    for color, source in source_of.items():
        (image_dir / f"mixed_{color}.png").symlink_to(source)
    checked_samples(image_dir, ["mixed"])
    for size in (None, 256):
        sample = read_sample(image_dir, "mixed", size)
        side = 512 if size is None else size
        assert sample.shape == (4, side, side) and sample.dtype == np.uint8
        for index, color in enumerate(CHANNELS):
            np.testing.assert_array_equal(sample[index], read_channel(source_of[color], size))
    assert len({sample[i].tobytes() for i in range(4)}) == 4  # four different source images


# --- HPA's tinted colour files ----------------------------------------------------------------


def write_tinted_jpg(path: Path, plane: np.ndarray, color: str, quality: int = 90) -> Path:
    """``plane`` tinted in ``color`` as HPA publishes its stains; JPEG adds noise in the other
    planes."""
    assert cv2.imwrite(str(path), tint(plane, color), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return path


def real_stain(real_channels_dir: Path, color: str) -> np.ndarray:
    """The first (by name) real 512 px grayscale channel of stain ``color``."""
    return cv2.imread(str(sorted(real_channels_dir.glob(f"*_{color}.png"))[0]), 0)


def signal_kept(decoded: np.ndarray, original: np.ndarray) -> float:
    return float(decoded.astype(np.float64).sum() / original.astype(np.float64).sum())


LUMA_WEIGHT = {"red": 0.299, "green": 0.587, "blue": 0.114, "yellow": 0.299 + 0.587}


def test_real_stains_tinted_as_hpa_jpgs_keep_their_signal(
    real_channels_dir: Path, tmp_path: Path
) -> None:
    # quality 75: more JPEG colour noise in the other planes than HPA's files carry; at 512 px
    # (detail HPA's 2048 px files do not have) JPEG's chroma subsampling blurs the stain, so this
    # test checks the signal kept; the next one checks the pixels at HPA's sizes
    kept_by_luminance = {}
    for row in real_channel_files(real_channels_dir):
        color, original = row["channel"], cv2.imread(str(real_channels_dir / row["file"]), 0)
        path = write_tinted_jpg(tmp_path / row["file"].replace(".png", ".jpg"), original, color, 75)
        decoded = read_channel(path, color=color)
        assert decoded.shape == original.shape and decoded.dtype == np.uint8
        assert 0.9 < signal_kept(decoded, original) < 1.1, path
        # the luminance conversion of several public pipelines keeps about the stain's luma weight
        # (a little more: JPEG's colour noise, and dim stains, where that noise is much of it)
        luminance = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2GRAY)
        kept_by_luminance[path] = signal_kept(luminance, original)
        assert LUMA_WEIGHT[color] - 0.02 < kept_by_luminance[path] < LUMA_WEIGHT[color] + 0.2
    assert max(kept for path, kept in kept_by_luminance.items() if "_blue" in path.name) < 0.15
    assert max(kept for path, kept in kept_by_luminance.items() if "_red" in path.name) < 0.4


@pytest.mark.parametrize("side", [1728, 2048])
def test_tinted_jpgs_of_hpa_sizes_read_back_within_jpeg_error(
    real_channels_dir: Path, tmp_path: Path, side: int
) -> None:
    for color in CHANNELS:
        large = cv2.resize(real_stain(real_channels_dir, color), (side, side))
        path = write_tinted_jpg(tmp_path / f"a_{color}.jpg", large, color)
        decoded = read_channel(path, color=color)
        assert decoded.shape == (side, side)
        assert np.abs(decoded.astype(int) - large).mean() < 3, path
        assert 0.97 < signal_kept(decoded, large) < 1.03, path
        luminance = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2GRAY)
        assert signal_kept(luminance, large) < LUMA_WEIGHT[color] + 0.05, path
        resized = read_channel(path, 512, color)  # data.image_size
        expected = cv2.resize(large, (512, 512), interpolation=cv2.INTER_AREA)
        assert resized.shape == (512, 512)
        assert np.abs(resized.astype(int) - expected).mean() < 2, path


@pytest.mark.parametrize("extension", [".png", ".tif"])
def test_16bit_tinted_files_read_their_stain_exactly(
    real_channels_dir: Path, tmp_path: Path, extension: str
) -> None:
    rng = np.random.default_rng(0)
    for color in CHANNELS:
        original = real_stain(real_channels_dir, color)
        tinted = tint(original.astype(np.uint16) * 257, color)
        other_planes = tint(np.ones_like(original), color) == 0
        tinted += rng.integers(0, 300, tinted.shape, dtype=np.uint16) * other_planes  # noise
        path = write_image(tmp_path / f"a_{color}{extension}", tinted)
        np.testing.assert_array_equal(read_channel(path, color=color), original)


@pytest.mark.parametrize(
    ("tinted_as", "read_as"),
    [("blue", "red"), ("green", "blue"), ("red", "yellow"), ("yellow", "red"), ("green", "yellow")],
)
def test_a_file_tinted_in_another_stains_colour_is_refused_naming_it(
    real_channels_dir: Path, tmp_path: Path, tinted_as: str, read_as: str
) -> None:
    original = real_stain(real_channels_dir, tinted_as)
    path = write_tinted_jpg(tmp_path / f"a_{read_as}.jpg", original, tinted_as)
    with pytest.raises(HPAInputError, match=f"not in the {read_as} stain") as error:
        read_channel(path, color=read_as)
    assert str(path) in str(error.value)
    with pytest.raises(HPAInputError, match=f"not in the {read_as} stain"):
        read_channel(path)  # the stain from the file name
    assert read_channel(path, color=tinted_as).shape == original.shape  # its own stain reads


def test_read_sample_reads_each_channel_through_its_stain(
    real_channels_dir: Path, tmp_path: Path
) -> None:
    originals = {}
    for color in CHANNELS:
        originals[color] = real_stain(real_channels_dir, color)
        write_tinted_jpg(tmp_path / f"s1_{color}.jpg", originals[color], color)
    sample = read_sample(tmp_path, "s1", None)
    for index, color in enumerate(CHANNELS):
        path = tmp_path / f"s1_{color}.jpg"
        np.testing.assert_array_equal(sample[index], read_channel(path, color=color))
        assert 0.9 < signal_kept(sample[index], originals[color]) < 1.1, color
    red_stain = (tmp_path / "s1_red.jpg").read_bytes()
    (tmp_path / "s1_blue.jpg").write_bytes(red_stain)  # a red stain as the blue file
    with pytest.raises(HPAInputError, match="not in the blue stain") as error:
        read_sample(tmp_path, "s1", 64)
    assert str(tmp_path / "s1_blue.jpg") in str(error.value)


def test_colour_file_of_unknown_stain_is_refused(tmp_path: Path) -> None:
    path = write_tinted_jpg(tmp_path / "picture.jpg", smooth_image(), "green")
    with pytest.raises(HPAInputError, match="stain is") as error:
        read_channel(path)
    assert str(path) in str(error.value)
    assert read_channel(path, color="green").shape == (64, 64)


# --- csv files ---------------------------------------------------------------------------------


def test_kaggle_train_csv(kaggle_train_csv: KaggleTrainCsv) -> None:
    """The real train.csv holds the Kaggle counts the package embeds; without ../shared, the
    stand-in drawn from them (31,072 rows in its layout) reads back with about those counts."""
    ids, labels = read_labels_csv(kaggle_train_csv.path, HPA2018)
    assert ids.shape == (31_072,) and ids.dtype.kind in "UO"
    assert labels.shape == (31_072, HPA2018.num_classes) and labels.dtype == np.uint8
    assert len(set(ids.tolist())) == 31_072
    labels_per_image = np.bincount(labels.sum(axis=1))
    observed_sizes = {k: int(v) for k, v in enumerate(labels_per_image) if v}
    counts = labels.sum(axis=0)
    if kaggle_train_csv.real:
        assert ids[0] == "00070df0-bbc3-11e8-b2bc-ac1f6b6435d0"
        np.testing.assert_array_equal(labels[0], np.isin(np.arange(HPA2018.num_classes), [16, 0]))
        assert tuple(counts.tolist()) == KAGGLE_CLASS_COUNTS
        assert observed_sizes == KAGGLE_LABELS_PER_IMAGE
    else:  # the drawn stand-in: every count near the real one
        assert set(observed_sizes) <= set(KAGGLE_LABELS_PER_IMAGE)  # 1 to 5 labels an image
        assert_within_5_binomial_sd(counts, KAGGLE_CLASS_COUNTS, len(ids))
        sizes = list(KAGGLE_LABELS_PER_IMAGE)
        assert_within_5_binomial_sd(
            [observed_sizes.get(k, 0) for k in sizes],
            [KAGGLE_LABELS_PER_IMAGE[k] for k in sizes],
            len(ids),
        )


def assert_within_5_binomial_sd(observed, expected, num_images: int) -> None:
    expected = np.asarray(expected, dtype=np.float64)
    binomial_sd = np.sqrt(expected * (1 - expected / num_images))
    assert (np.abs(np.asarray(observed) - expected) < 5 * binomial_sd).all(), observed


def test_real_sample_submission_ids(real_sample_submission_csv: Path, real_train_csv: Path) -> None:
    test_ids = read_ids_csv(real_sample_submission_csv)
    assert test_ids.shape == (11_702,) and len(set(test_ids.tolist())) == 11_702
    train_ids, _ = read_labels_csv(real_train_csv, HPA2018)
    assert not set(test_ids.tolist()) & set(train_ids.tolist())


LABEL_CSV_ERRORS = {
    "empty file": ("", "empty", None),
    "header only": ("Id,Target\n", "no rows", None),
    "no Target column": ("Id,Label\na,0\n", "Target", 1),
    "empty Target": ("Id,Target\na,0\nb,\n", "empty", 3),
    "non-integer Target": ("Id,Target\na,0\nb,1 x\n", "not an integer", 3),
    "class id 28": ("Id,Target\na,0\nb,0 28\n", "outside 0..27", 3),
    "negative class id": ("Id,Target\na,-1\n", "outside 0..27", 2),
    "empty Id": ("Id,Target\na,0\n,1\n", "empty Id", 3),
    "blank line counted": ("Id,Target\na,0\n\nb,x\n", "not an integer", 4),
    "too many fields": ("Id,Target\na,0\nb,1,2\n", "csv", 3),
}


@pytest.mark.parametrize("case", LABEL_CSV_ERRORS)
def test_labels_csv_errors_name_the_file_and_line(tmp_path: Path, case: str) -> None:
    content, problem, line = LABEL_CSV_ERRORS[case]
    path = write_text(tmp_path / "labels.csv", content)
    with pytest.raises(HPAInputError, match=problem) as error:
        read_labels_csv(path, HPA2018)
    message = str(error.value)
    assert str(path) in message
    if line is not None:
        assert f"line {line}" in message, message


def test_labels_csv_duplicate_ids_name_both_lines(tmp_path: Path) -> None:
    path = write_text(tmp_path / "labels.csv", "Id,Target\na,0\nb,1\nc,2\na,3\nb,4\n")
    with pytest.raises(HPAInputError, match="duplicate Id 'a'") as error:
        read_labels_csv(path, HPA2018)
    assert str(path) in str(error.value) and "lines 2 and 5" in str(error.value)
    assert "2 repeated" in str(error.value)


def test_missing_labels_csv_is_named(tmp_path: Path) -> None:
    with pytest.raises(HPAInputError, match="not found") as error:
        read_labels_csv(tmp_path / "train.csv", HPA2018)
    assert str(tmp_path / "train.csv") in str(error.value)


def test_labels_csv_reads_targets_as_strings(tmp_path: Path) -> None:
    # keep_default_na=False: an Id such as "NA" stays a string; extra columns are ignored.
    path = write_text(tmp_path / "labels.csv", "Id,Target,Note\nNA,0 27,x\n007,5,\n")
    ids, labels = read_labels_csv(path, HPA2018)
    assert ids.tolist() == ["NA", "007"]
    assert np.flatnonzero(labels[0]).tolist() == [0, 27] and np.flatnonzero(labels[1]).tolist() == [
        5
    ]


def test_ids_csv_errors(tmp_path: Path) -> None:
    no_id = write_text(tmp_path / "no_id.csv", "Name,Predicted\na,0\n")
    with pytest.raises(HPAInputError, match="line 1") as error:
        read_ids_csv(no_id)
    assert str(no_id) in str(error.value)
    duplicate = write_text(tmp_path / "duplicate.csv", "Id,Predicted\na,0\na,0\n")
    with pytest.raises(HPAInputError, match="lines 2 and 3") as error:
        read_ids_csv(duplicate)
    assert str(duplicate) in str(error.value)
    assert read_ids_csv(write_text(tmp_path / "ok.csv", "Id\nx\ny\n")).tolist() == ["x", "y"]
    two_thousand_21 = write_text(tmp_path / "2021.csv", "ID,Predicted\nx,0\n")
    assert read_ids_csv(two_thousand_21, id_column="ID").tolist() == ["x"]


def test_labels_csv_reads_the_columns_and_separator_of_the_label_set(tmp_path: Path) -> None:
    path = write_text(tmp_path / "train.csv", "ID,Label\na,0|16\nb,18\nc,5|5\n")
    ids, labels = read_labels_csv(path, HPA2021)
    assert ids.tolist() == ["a", "b", "c"]
    assert labels.shape == (3, 19) and labels.dtype == np.uint8
    assert [np.flatnonzero(row).tolist() for row in labels] == [[0, 16], [18], [5]]
    with pytest.raises(HPAInputError, match="missing column.*ID, Label") as error:
        read_labels_csv(path, HPA2018)
    assert str(path) in str(error.value) and "line 1" in str(error.value)


@pytest.mark.parametrize(
    "content, line",
    [("ID,Label\na,0\nb,0|19\n", 3), ("ID,Label\na,19\n", 2), ("ID,Label\na,0 1\n", 2)],
)
def test_a_label_outside_the_label_set_is_refused_naming_the_file_and_line(
    tmp_path: Path, content: str, line: int
) -> None:
    path = write_text(tmp_path / "train.csv", content)
    with pytest.raises(HPAInputError) as error:
        read_labels_csv(path, HPA2021)
    message = str(error.value)
    assert str(path) in message and f"line {line}" in message, message
    assert "outside 0..18" in message or "not an integer" in message, message
