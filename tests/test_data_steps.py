"""The steps of the data module, one by one, and the data module composing them: its typed
config (every key of conf/data/*.yaml, unknown keys refused), the label set flowing through, the
class statistics of the train split and the oversampling weights drawn from them."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
import pytest
from cli import CONF_DIR, compose_entry
from omegaconf import OmegaConf
from planted import append_rows, write_degraded_copy

from hpa.core.errors import HPAInputError
from hpa.core.labels import HPA2018, HPA2021, LabelSet
from hpa.data.cell_datamodule import CellDataModule
from hpa.data.class_statistics import ClassStatistics
from hpa.data.config import DuplicatesConfig, NormalizeConfig, SplitConfig
from hpa.data.datamodule import HPADataModule
from hpa.data.external import MultiRootDataset, join_external_roots, read_external_roots
from hpa.data.grouped_split import RootSplit, split_with_duplicate_groups
from hpa.data.leaks import duplicate_leak_report
from hpa.data.normalization import channel_statistics
from hpa.data.reader import read_labels_csv, read_sample
from hpa.data.sampler import class_weights
from hpa.data.split import assign_splits, kfold_split, save_split, train_val_test_split
from hpa.data.split_datasets import build_split_caches, build_split_datasets
from hpa.data.synthetic import generate_dataset
from hpa.data.table import ImageTable, read_image_table
from hpa.data.transforms import evaluation_crop, train_augmentation
from hpa.run.builders import build_datamodule

SIZE = 64
CROP = 48
COPIED_ROWS = range(0, 12)  # rows of data.root with a degraded copy in the external root


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, Path]:
    """``root``: 40 synthetic samples; ``external``: 10 other samples and degraded copies
    (``ext-{Id}``) of 12 samples of ``root``."""
    base = tmp_path_factory.mktemp("steps")
    root = generate_dataset(base / "root", 40, SIZE, 0, progress=False)
    external = base / "external"
    shutil.copytree(generate_dataset(base / "other", 10, SIZE, 1, progress=False), external)
    table = pd.read_csv(root / "train.csv", dtype=str)
    copies = {}
    for row in COPIED_ROWS:
        source = table.Id[row]
        write_degraded_copy(
            root / "train", source, external / "train", f"ext-{source}", scale=0.8, gain=1.1
        )
        copies[f"ext-{source}"] = table.Target[row]
    append_rows(external / "train.csv", copies)
    return {"root": root, "external": external}


@pytest.fixture
def root_2021(roots: dict[str, Path], tmp_path: Path) -> Path:
    """The images of ``root`` under a 2021-style csv: ``ID,Label``, class ids joined by ``|``,
    every image labelled 18 (Negative) and, for one in two, 3."""
    root = tmp_path / "hpa2021"
    shutil.copytree(roots["root"] / "train", root / "train")
    ids = pd.read_csv(roots["root"] / "train.csv", dtype=str).Id
    labels = ["3|18" if row % 2 else "18" for row in range(len(ids))]
    pd.DataFrame({"ID": ids, "Label": labels}).to_csv(root / "train.csv", index=False)
    return root


def config_of(root: Path, **options) -> dict:
    return {"root": root, "image_size": SIZE, "batch_size": 4, "num_workers": 0, **options}


# -- config ------------------------------------------------------------------------------------


@pytest.mark.parametrize("option", sorted(p.stem for p in (CONF_DIR / "data").glob("*.yaml")))
def test_every_data_config_is_read_with_its_meaning(option: str, tmp_path: Path):
    cfg = compose_entry("train", [f"data={option}", "data.root=/some/hpa", "seed=5"], tmp_path)
    data = OmegaConf.to_container(cfg.data, resolve=True)
    module_class = hydra.utils.get_class(data["_target_"])
    datamodule = module_class.from_config(cfg.data, HPA2018)  # nothing is read yet
    config = datamodule.config
    assert config.root == Path("/some/hpa") and config.image_size == data["image_size"]
    assert config.split == SplitConfig(fractions=tuple(data["split"]), seed=5)
    assert config.sampler.oversample is data["oversample"]
    assert config.sampler.minority_classes is None  # the label set's
    assert config.sampler.draws == data["sampler"]["draws"]
    assert config.duplicates == DuplicatesConfig(**data["duplicates"])
    assert config.normalize.mean == tuple(data["normalize"]["mean"])
    assert config.cache.enabled is data["cache"]
    assert config.cache.cache_dir == Path(data["cache_dir"])
    assert config.loader.batch_size == data["batch_size"]
    if data["synthetic"] is not None:
        assert config.synthetic.num_images == data["synthetic"]["num_images"]
    if isinstance(datamodule, CellDataModule):  # the 2021 layout's own keys
        assert datamodule.cells.cell_truth == Path("/some/hpa/cell_truth")
        assert datamodule.cells.segment_processes == data["segment_processes"]
        if data["synthetic_cells"] is not None:
            assert (
                datamodule.cells.synthetic_cells.num_train == (data["synthetic_cells"]["num_train"])
            )


@pytest.mark.parametrize(
    "key, value, named",
    [
        ("oversampel", True, "data.oversampel"),
        ("sampler", {"stratgy": "minority"}, "data.sampler.stratgy"),
        ("normalize", {"means": [0, 0, 0, 0]}, "data.normalize.means"),
        ("duplicates", {"treshold": 3}, "data.duplicates.treshold"),
        ("synthetic", {"num_images": 4, "image_size": 64, "seed": 0, "size": 3}, "synthetic.size"),
    ],
)
def test_an_unknown_key_is_refused_by_name_before_any_data_is_read(key, value, named):
    with pytest.raises(HPAInputError, match=f"unknown key.*{named}"):
        HPADataModule.from_config({"root": "/nowhere", key: value}, HPA2018)


def test_a_missing_root_and_bad_settings_are_refused_before_any_data_is_read(tmp_path: Path):
    cfg = compose_entry("train", ["data=hpa"], tmp_path)
    with pytest.raises(HPAInputError, match=r"data.root is not set .*data=hpa data.root=PATH"):
        HPADataModule.from_config(cfg.data, HPA2018)
    for options, problem in (
        ({"validate": "thorough"}, "data.validate='thorough'"),
        ({"on_bad_image": "ignore"}, "data.on_bad_image='ignore'"),
        ({"sampler": {"strategy": "balanced"}}, "data.sampler.strategy"),
        ({"duplicates": {"threshold": -1}}, "threshold"),
        ({"image_size": 64, "load_size": 32}, "load_size=32 is smaller"),
        ({"sampler": {"minority_classes": [3, 28]}}, r"minority_classes: class ids \[28\]"),
    ):
        with pytest.raises(HPAInputError, match=problem):
            HPADataModule.from_config({"root": "/nowhere", **options}, HPA2018)


def test_minority_oversampling_without_minority_classes_suggests_inverse_frequency():
    settings = {"root": "/nowhere", "oversample": True}
    with pytest.raises(HPAInputError, match="strategy=inverse_frequency") as error:
        HPADataModule.from_config(settings, HPA2021)  # hpa2021 names no minority class
    assert "hpa2021" in str(error.value)
    with pytest.raises(HPAInputError, match="strategy=inverse_frequency"):
        HPADataModule.from_config({**settings, "sampler": {"minority_classes": []}}, HPA2018)
    inverse = {**settings, "sampler": {"strategy": "inverse_frequency"}}
    assert HPADataModule.from_config(inverse, HPA2021).label_set == HPA2021
    named = HPADataModule.from_config({**settings, "sampler": {"minority_classes": [11]}}, HPA2021)
    assert named.minority_classes == (11,)
    # without oversampling there is nothing to boost, and nothing to refuse
    assert HPADataModule.from_config({"root": "/nowhere"}, HPA2021).minority_classes == ()
    assert HPADataModule.from_config(settings, HPA2018).minority_classes == (
        HPA2018.minority_classes
    )


# -- the steps ---------------------------------------------------------------------------------


def test_read_the_table_with_the_columns_of_the_label_set(roots, root_2021: Path):
    table = read_image_table(roots["root"], HPA2018)
    assert len(table) == 40 and table.labels.shape == (40, 28)
    assert table.csv_path == roots["root"] / "train.csv"
    assert table.image_dir == roots["root"] / "train"
    table_2021 = read_image_table(root_2021, HPA2021)
    np.testing.assert_array_equal(table_2021.ids, table.ids)
    assert table_2021.labels.shape == (40, 19)
    assert table_2021.labels[:, 18].all() and table_2021.labels[:, 3].sum() == 20
    some = table_2021.rows(np.array([3, 1]))
    assert some.ids.tolist() == [table.ids[3], table.ids[1]] and some.labels[0, 3] == 1
    with pytest.raises(HPAInputError, match="does not exist"):
        read_image_table(roots["root"] / "absent", HPA2018)


def test_a_class_id_outside_the_label_set_stops_setup_naming_the_csv_line(root_2021: Path):
    table = pd.read_csv(root_2021 / "train.csv", dtype=str)
    table.loc[6, "Label"] = "3|19"
    table.to_csv(root_2021 / "train.csv", index=False)
    datamodule = HPADataModule.from_config(config_of(root_2021), HPA2021)
    with pytest.raises(HPAInputError, match="class id 19 is outside 0..18") as error:
        datamodule.setup("fit")
    assert f"{root_2021 / 'train.csv'}, line 8" in str(error.value)
    assert datamodule.datasets == {}


def test_assign_splits_follows_the_split_config(roots, tmp_path: Path):
    table = read_image_table(roots["root"], HPA2018)
    fractions = (0.6, 0.2, 0.2)
    three_way = assign_splits(table.labels, table.ids, SplitConfig(fractions, seed=4))
    np.testing.assert_array_equal(three_way, train_val_test_split(table.labels, fractions, 4))
    folds = SplitConfig(fractions, num_folds=3, fold=2, seed=4)
    np.testing.assert_array_equal(
        assign_splits(table.labels, table.ids, folds),
        kfold_split(table.labels, 3, 2, test_fraction=0.2, seed=4),
    )
    save_split(tmp_path / "split.csv", table.ids, three_way)
    from_file = SplitConfig(split_file=tmp_path / "split.csv", seed=9)
    np.testing.assert_array_equal(assign_splits(table.labels, table.ids, from_file), three_way)


def test_the_split_keeps_groups_of_duplicates_together(roots, tmp_path: Path):
    """data.root with degraded copies of its own first rows: each pair shares its split."""
    root = tmp_path / "root"
    shutil.copytree(roots["root"], root, ignore=shutil.ignore_patterns("cache"))
    table = read_image_table(root, HPA2018)
    copies = {f"dup-{table.ids[row]}": HPA2018.format(table.labels[row]) for row in range(8)}
    for row in range(8):
        write_degraded_copy(root / "train", table.ids[row], root / "train", f"dup-{table.ids[row]}")
    append_rows(root / "train.csv", copies)
    table = read_image_table(root, HPA2018)
    keep = np.ones(len(table), dtype=bool)
    split = SplitConfig(seed=1)
    grouped = split_with_duplicate_groups(table, keep, split, DuplicatesConfig())
    pairs = grouped.duplicates.pairs
    found = set(zip(table.ids[pairs.first], table.ids[pairs.second], strict=True))
    assert found == {(table.ids[row], f"dup-{table.ids[row]}") for row in range(8)}
    split_of = dict(zip(table.ids.tolist(), grouped.assignment.tolist(), strict=True))
    assert all(split_of[original] == split_of[copy] for original, copy in found)
    plain = assign_splits(table.labels, table.ids, split)
    np.testing.assert_array_equal(grouped.assignment_ignoring_duplicates, plain)
    # evaluation (no duplicate search) and a disabled search give the plain split
    for duplicates in (None, DuplicatesConfig(enabled=False)):
        ungrouped = split_with_duplicate_groups(table, keep, split, duplicates)
        assert ungrouped.duplicates is None and ungrouped.assignment_ignoring_duplicates is None
        np.testing.assert_array_equal(ungrouped.assignment, plain)


def test_join_external_data_drops_duplicates_of_val_and_test_images(roots):
    table = read_image_table(roots["root"], HPA2018)
    keep = np.ones(len(table), dtype=bool)
    externals = read_external_roots([roots["external"]], table, HPA2018, "fast", "error")
    assert externals[0].labels.shape == (22, 28)
    root_split = split_with_duplicate_groups(table, keep, SplitConfig(), DuplicatesConfig())
    pairs = join_external_roots(externals, table, root_split)
    external = externals[0]
    split_of = dict(zip(table.ids.tolist(), root_split.assignment.tolist(), strict=True))
    first, second = pairs[0].first, pairs[0].second
    paired = dict(zip(external.ids[first], table.ids[second], strict=True))
    assert paired == {f"ext-{table.ids[row]}": table.ids[row] for row in COPIED_ROWS}
    for external_id, root_id in paired.items():
        used = external.used[external.ids.tolist().index(external_id)]
        assert used == (split_of[root_id] == "train")
    assert external.used[:10].all()  # the distinct images
    report = duplicate_leak_report(root_split, externals, pairs).set_index("splits")
    evaluation_copies = sum(split_of[root_id] != "train" for root_id in paired.values())
    assert evaluation_copies > 0
    assert report.loc[["external-val", "external-test"], "ignoring_duplicates"].sum() == (
        evaluation_copies
    )
    assert report.loc[["external-val", "external-test"], "this_run"].sum() == 0
    # without a duplicate search every readable image is used and there is no report
    externals = read_external_roots([roots["external"]], table, HPA2018, "fast", "error")
    plain = RootSplit(root_split.assignment)
    assert join_external_roots(externals, table, plain) == [] and externals[0].used.all()
    assert duplicate_leak_report(plain, externals, []) is None


def test_caches_and_datasets_hold_each_split_and_the_external_images(roots):
    table = read_image_table(roots["root"], HPA2018)
    externals = read_external_roots([roots["external"]], table, HPA2018, "fast", "error")
    assignment = train_val_test_split(table.labels, (0.7, 0.15, 0.15))
    crop = evaluation_crop(CROP, SIZE)
    caches = build_split_caches(table, externals, SIZE, None)
    assert len(caches.root) == 40 and len(caches.externals[0]) == 22
    for cache in (None, caches):
        datasets = build_split_datasets(table, assignment, externals, CROP, SIZE, crop, crop, cache)
        for name in ("val", "test"):
            np.testing.assert_array_equal(datasets[name].ids, table.ids[assignment == name])
        train = datasets["train"]
        assert isinstance(train, MultiRootDataset)
        expected_ids = [*table.ids[assignment == "train"], *externals[0].ids]
        assert train.ids.tolist() == expected_ids
        np.testing.assert_array_equal(train.labels[-22:], externals[0].labels)
        last = train.read_image(len(train) - 1)  # an external image, read at the load size
        np.testing.assert_array_equal(
            last, read_sample(roots["external"] / "train", expected_ids[-1], SIZE)
        )
        assert train[0]["image"].shape == (4, CROP, CROP)


def test_the_train_augmentation_is_seeded():
    image = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 4), dtype=np.uint8)
    steps = {"flip": {"_target_": "albumentations.HorizontalFlip", "p": 0.5}}
    outputs = []
    for _ in range(2):
        pipeline = train_augmentation(steps, CROP, SIZE, seed=3)
        outputs.append([pipeline(image=image)["image"] for _ in range(6)])
    for first, second in zip(*outputs, strict=True):
        np.testing.assert_array_equal(first, second)
    assert outputs[0][0].shape == (CROP, CROP, 4)
    assert train_augmentation(None, SIZE, None, seed=3) is None


def test_channel_statistics_given_or_computed_on_the_train_split(roots):
    table = read_image_table(roots["root"], HPA2018)
    all_train = np.full(len(table), "train")
    train = build_split_datasets(table, all_train, [], SIZE, SIZE, None, None)["train"]
    given = NormalizeConfig(mean=(0.5,) * 4, std=(1.0,) * 4)
    mean, std = channel_statistics(given, train, seed=0)
    assert mean.tolist() == [0.5] * 4 and std.tolist() == [1.0] * 4
    mean, std = channel_statistics(NormalizeConfig(num_images=40), train, seed=0)
    pixels = np.stack([train.read_image(i) for i in range(40)]).astype(np.float64) / 255
    per_image_mean = pixels.reshape(40, 4, -1).mean(axis=2)
    np.testing.assert_allclose(mean, per_image_mean.mean(axis=0), rtol=1e-5)
    assert (std > 0).all()
    with pytest.raises(HPAInputError, match="4 values"):
        channel_statistics(NormalizeConfig(mean=(0.5,) * 3, std=(1.0,) * 3), train, seed=0)


def test_class_statistics_count_and_name_the_classes(caplog):
    labels = np.zeros((4, 19), dtype=np.uint8)
    labels[:, 0] = 1
    labels[:2, 16] = 1
    statistics = ClassStatistics.from_labels(HPA2021, labels)
    assert statistics.counts.tolist() == [4] + [0] * 15 + [2, 0, 0]
    assert statistics.num_images == 4 and statistics.rates[16] == 0.5
    assert statistics.absent_classes == tuple(c for c in range(19) if c not in (0, 16))
    table = statistics.table()
    assert list(table.columns) == ["class_id", "class_name", "train_images", "train_rate"]
    assert table.class_name.tolist() == list(HPA2021.class_names)
    assert table.train_images.tolist() == statistics.counts.tolist()
    with caplog.at_level(logging.WARNING, logger="hpa.data.class_statistics"):
        statistics.warn_about_absent_classes()
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "hpa.data.class_statistics"]
    assert "17 (Vesicles and punctate cytosolic patterns)" in warning
    assert "1 (Nuclear membrane)" in warning and "0 (Nucleoplasm)" not in warning
    with pytest.raises(ValueError, match="19"):
        ClassStatistics.from_labels(HPA2021, np.zeros((2, 28)))


# -- the data module ---------------------------------------------------------------------------


def test_class_statistics_and_sampler_weights_come_from_the_train_split_used(roots):
    options = {
        "external": [roots["external"]],
        "oversample": True,
        "sampler": {"strategy": "inverse_frequency", "power": 1.0},
    }
    datamodule = HPADataModule.from_config(config_of(roots["root"], **options), HPA2018)
    datamodule.setup("fit")
    datamodule.setup("fit")  # idempotent
    train = datamodule.datasets["train"]
    assert datamodule.label_set == HPA2018
    statistics = datamodule.class_statistics
    assert statistics.num_images == len(train) > (datamodule.assignment == "train").sum()
    np.testing.assert_array_equal(statistics.counts, train.labels.sum(axis=0))
    weights = datamodule.sampler_class_weights()
    counts = train.labels.sum(axis=0)
    np.testing.assert_array_equal(
        weights, class_weights(HPA2018, counts, "inverse_frequency", power=1.0)
    )
    root_only = train.labels[: (datamodule.assignment == "train").sum()].sum(axis=0)
    assert not np.array_equal(weights, class_weights(HPA2018, root_only, "inverse_frequency"))
    plain = HPADataModule.from_config(config_of(roots["root"]), HPA2018)
    plain.setup("fit")
    assert plain.sampler_class_weights() is None


def test_a_2021_data_module_trains_on_its_19_classes(root_2021: Path, caplog):
    options = {"oversample": True, "sampler": {"strategy": "inverse_frequency"}}
    datamodule = HPADataModule.from_config(config_of(root_2021, **options), HPA2021)
    with caplog.at_level(logging.WARNING, logger="hpa.data.class_statistics"):
        datamodule.setup("fit")
    train = datamodule.datasets["train"]
    assert train.labels.shape[1] == 19 and datamodule.labels.shape == (40, 19)
    assert datamodule.class_statistics.absent_classes == tuple(
        c for c in range(19) if c not in (3, 18)
    )
    warnings = [r for r in caplog.records if r.name == "hpa.data.class_statistics"]
    assert len(warnings) == 1 and "17 class(es)" in warnings[0].getMessage()  # one names all
    weights = datamodule.sampler_class_weights()
    assert weights.shape == (19,) and weights[3] > weights[18] == 1.0
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["target"].shape == (4, 19)


def test_build_datamodule_takes_the_label_set_of_the_labels_group(root_2021: Path, tmp_path):
    overrides = ["data=hpa", f"data.root={root_2021}", "labels=hpa2021", "data.image_size=64"]
    cfg = compose_entry("train", overrides, tmp_path)
    datamodule = build_datamodule(cfg)
    assert datamodule.label_set == HPA2021
    assert datamodule.image_size == 64 and datamodule.config.split.seed == cfg.seed
    assert datamodule.augment == OmegaConf.to_container(cfg.augment, resolve=True)


def test_read_table_can_be_replaced_by_another_layout(roots, tmp_path: Path):
    """A data module of another layout composes the same steps with its own table reader."""
    root = tmp_path / "flat"
    shutil.copytree(roots["root"] / "train", root / "images")
    pd.read_csv(roots["root"] / "train.csv").to_csv(root / "labels.csv", index=False)

    def read_flat_table(data_root: Path, label_set: LabelSet) -> ImageTable:
        ids, labels = read_labels_csv(data_root / "labels.csv", label_set)
        return ImageTable(data_root, data_root / "labels.csv", data_root / "images", ids, labels)

    class FlatDataModule(HPADataModule):
        read_table = staticmethod(read_flat_table)

    datamodule = FlatDataModule.from_config(config_of(root), HPA2018)
    datamodule.setup("fit")
    assert datamodule.datasets["train"].image_dir == root / "images"
    assert sum(len(d) for d in datamodule.datasets.values()) == 40
