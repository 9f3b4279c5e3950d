"""Label sets: the built-ins, a user's own from a names file, csv spelling, checkpoints' copy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cli import CONF_DIR
from omegaconf import OmegaConf

from hpa.core.errors import HPAInputError
from hpa.core.labels import HPA2018, HPA2021, LabelSet, build_label_set


def test_the_2018_set_is_the_kaggle_competitions() -> None:
    assert HPA2018.num_classes == 28
    assert HPA2018.class_names[0] == "Nucleoplasm" and HPA2018.class_names[27] == "Rods & rings"
    assert (HPA2018.column, HPA2018.separator, HPA2018.id_column) == ("Target", " ", "Id")
    assert HPA2018.minority_classes == (8, 9, 10, 15, 17, 20, 27)
    assert HPA2018.format(HPA2018.parse("25 0")) == "0 25"
    assert HPA2018.slug(27) == "27_rods_and_rings"


def test_the_2021_set_has_19_classes_joined_by_bars() -> None:
    assert HPA2021.num_classes == 19
    assert HPA2021.class_names[9] == "Actin filaments"
    assert HPA2021.class_names[18] == "Negative"
    assert (HPA2021.column, HPA2021.separator, HPA2021.id_column) == ("Label", "|", "ID")
    vector = HPA2021.parse("13|13|0")  # a repeated id is one label
    assert vector.sum() == 2 and vector[13] == vector[0] == 1
    assert HPA2021.format(vector) == "0|13"
    assert HPA2021.slug(17) == "17_vesicles_and_punctate_cytosolic_patterns"


@pytest.mark.parametrize(
    ("label_set", "cell", "message"),
    [
        (HPA2018, "", "empty"),
        (HPA2018, "0 28", "class id 28 is outside 0..27"),
        (HPA2018, "0 x", "'x' is not an integer"),
        (HPA2021, "19", "class id 19 is outside 0..18"),
        (HPA2021, "0 16", "ids joined by '|'"),
        (HPA2021, "0||16", "'' is not an integer"),
    ],
)
def test_a_bad_cell_is_refused_with_what_is_wrong(label_set, cell, message) -> None:
    with pytest.raises(ValueError, match=message):
        label_set.parse(cell)


def test_to_matrix_names_the_row_of_a_bad_cell() -> None:
    with pytest.raises(ValueError, match="row 2: .*class id 30"):
        HPA2018.to_matrix(["0", "1 2", "30"])
    assert HPA2021.to_matrix([]).shape == (0, 19)


def test_a_label_set_survives_a_checkpoint_as_plain_data() -> None:
    for label_set in (HPA2018, HPA2021):
        assert LabelSet.from_dict(label_set.to_dict()) == label_set
    assert {HPA2018, LabelSet.from_dict(HPA2018.to_dict())} == {HPA2018}


def _names_file(tmp_path: Path, names: list[str]) -> Path:
    path = tmp_path / "classes.txt"
    path.write_text("\n".join(names) + "\n\n")
    return path


def test_a_custom_set_reads_one_name_per_line(tmp_path: Path) -> None:
    names = _names_file(tmp_path, ["Nucleus", "Cytosol", "Membrane & junctions"])
    label_set = build_label_set(
        {"name": "custom", "names_file": str(names), "column": "Labels", "separator": ";"}
    )
    assert label_set.class_names == ("Nucleus", "Cytosol", "Membrane & junctions")
    assert label_set.slug(2) == "02_membrane_and_junctions"
    assert label_set.parse("2;0").tolist() == [1, 0, 1]
    assert label_set.column == "Labels" and label_set.id_column == "Id"
    assert label_set.minority_classes == ()


def test_the_config_group_builds_each_set(tmp_path: Path) -> None:
    for name, expected in (("hpa2018", HPA2018), ("hpa2021", HPA2021)):
        node = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "labels" / f"{name}.yaml"))
        assert build_label_set(node) == expected
    custom = OmegaConf.load(CONF_DIR / "labels" / "custom.yaml")
    custom.names_file = str(_names_file(tmp_path, ["a", "b"]))
    assert build_label_set(OmegaConf.to_container(custom)).class_names == ("a", "b")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"name": "mine"}, "labels=mine needs labels.names_file"),
        ({"name": "custom", "names_file": "/nonexistent/classes.txt"}, "cannot read it"),
        ({"name": "hpa2018", "colour": "Target"}, r"unknown key\(s\) \['colour'\]"),
        ({"name": "hpa2018", "separator": "1"}, "neither letters nor digits"),
        ({"name": "hpa2018", "column": "Id"}, "two different non-empty names"),
        ({"name": "hpa2021", "minority_classes": [3, 19]}, r"minority classes \[19\]"),
    ],
)
def test_a_bad_labels_config_is_refused(config, message) -> None:
    with pytest.raises(HPAInputError, match=message):
        build_label_set(config)


def test_a_names_file_with_a_hole_or_a_repeat_is_refused(tmp_path: Path) -> None:
    with pytest.raises(HPAInputError, match=r"lines \[2\] are empty"):
        build_label_set(
            {"name": "custom", "names_file": str(_names_file(tmp_path, ["a", "", "c"]))}
        )
    with pytest.raises(HPAInputError, match=r"repeated: \['a'\]"):
        build_label_set(
            {"name": "custom", "names_file": str(_names_file(tmp_path, ["a", "b", "a"]))}
        )


def test_format_refuses_a_vector_of_another_set() -> None:
    with pytest.raises(ValueError, match="19 class flags"):
        HPA2021.format(np.zeros(28))
