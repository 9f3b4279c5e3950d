"""Label sets: the classes a run learns, and how its csv spells an image's labels.

A label set is data, chosen with the config group ``labels=``:

- ``hpa2018`` (the default): the 28 classes of the 2018 Kaggle competition, a space-separated
  ``Target`` column (``"0 25"``), the seed report's seven minority classes;
- ``hpa2021``: the 19 classes of the 2021 single-cell competition, a ``Label`` column of ids
  joined by ``|`` (``"0|16"``) beside an ``ID`` column;
- ``custom``: a user's own, one class name per line of ``labels.names_file`` (the line number,
  from 0, is the class id), with ``labels.column`` and ``labels.separator``.

Everything that depends on the classes (the head size, metric names, thresholds.json,
prediction and per-class csvs, reports, submissions, ONNX metadata, CAM figures) asks the run's
``LabelSet``; a checkpoint stores it (``LabelSet.to_dict``) so that evaluation, prediction, export
and explanation read data with the labels the model was trained on.

This module is the only one that spells a class list. Class statistics (counts, weights, rates)
are never constants: they come from the labels of the run's own train split.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from hpa.core.errors import HPAInputError

CHANNELS: tuple[str, ...] = ("red", "green", "blue", "yellow")
"""Stain of each input channel, in the order they are stacked (RGBY)."""

HPA2018_CLASS_NAMES: tuple[str, ...] = (
    "Nucleoplasm",
    "Nuclear membrane",
    "Nucleoli",
    "Nucleoli fibrillar center",
    "Nuclear speckles",
    "Nuclear bodies",
    "Endoplasmic reticulum",
    "Golgi apparatus",
    "Peroxisomes",
    "Endosomes",
    "Lysosomes",
    "Intermediate filaments",
    "Actin filaments",
    "Focal adhesion sites",
    "Microtubules",
    "Microtubule ends",
    "Cytokinetic bridge",
    "Mitotic spindle",
    "Microtubule organizing center",
    "Centrosome",
    "Lipid droplets",
    "Plasma membrane",
    "Cell junctions",
    "Mitochondria",
    "Aggresome",
    "Cytosol",
    "Cytoplasmic bodies",
    "Rods & rings",
)

HPA2018_MINORITY_CLASSES: tuple[int, ...] = (8, 9, 10, 15, 17, 20, 27)
"""The seven minority classes of the seed report (Peroxisomes, Endosomes, Lysosomes, Microtubule
ends, Mitotic spindle, Lipid droplets, Rods & rings): the seven rarest in the real train.csv."""

HPA2021_CLASS_NAMES: tuple[str, ...] = (
    "Nucleoplasm",
    "Nuclear membrane",
    "Nucleoli",
    "Nucleoli fibrillar center",
    "Nuclear speckles",
    "Nuclear bodies",
    "Endoplasmic reticulum",
    "Golgi apparatus",
    "Intermediate filaments",
    "Actin filaments",
    "Microtubules",
    "Mitotic spindle",
    "Centrosome",
    "Plasma membrane",
    "Mitochondria",
    "Aggresome",
    "Cytosol",
    "Vesicles and punctate cytosolic patterns",
    "Negative",
)

HPA2021_MINORITY_CLASSES: tuple[int, ...] = ()
"""None fixed: the 2021 set has no seed report naming its minority classes. Oversample it with
``data.sampler.strategy=inverse_frequency`` (weights from the run's own train split), or name
them with ``labels.minority_classes=[...]``."""


@dataclass(frozen=True)
class LabelSet:
    """The classes of a run and the csv spelling of an image's labels.

    ``class_names[i]`` is the name of class id ``i``; ``column`` holds the labels of an image as
    class ids joined by ``separator``; ``id_column`` holds the image id. ``minority_classes`` are
    what ``data.sampler.strategy=minority`` oversamples when ``data.sampler.minority_classes`` is
    null.
    """

    name: str
    class_names: tuple[str, ...]
    column: str = "Target"
    separator: str = " "
    id_column: str = "Id"
    minority_classes: tuple[int, ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "class_names", tuple(str(n) for n in self.class_names))
        object.__setattr__(self, "minority_classes", tuple(int(i) for i in self.minority_classes))
        if not self.class_names:
            raise HPAInputError(f"label set {self.name!r} has no classes")
        duplicates = sorted({n for n in self.class_names if self.class_names.count(n) > 1})
        if duplicates:
            raise HPAInputError(f"label set {self.name!r}: class names repeated: {duplicates}")
        blank = [i for i, n in enumerate(self.class_names) if not n.strip()]
        if blank:
            raise HPAInputError(f"label set {self.name!r}: class ids {blank} have an empty name")
        if not self.column or not self.id_column or self.column == self.id_column:
            raise HPAInputError(
                f"label set {self.name!r}: the id column ({self.id_column!r}) and the label "
                f"column ({self.column!r}) must be two different non-empty names"
            )
        if not self.separator or self.separator.isalnum():
            raise HPAInputError(
                f"label set {self.name!r}: separator {self.separator!r} must be a non-empty "
                "string of neither letters nor digits"
            )
        outside = [i for i in self.minority_classes if not 0 <= i < self.num_classes]
        if outside:
            raise HPAInputError(
                f"label set {self.name!r}: minority classes {outside} are outside "
                f"0..{self.num_classes - 1}"
            )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def class_ids(self) -> range:
        return range(self.num_classes)

    def parse(self, labels: object) -> np.ndarray:
        """Parse one csv cell (``"0 25"``, ``"0|16"``) into a multi-hot uint8 vector.

        Raises ValueError for an empty cell, a token that is not an integer, or a class id outside
        the set. Repeated ids (``"13|13"``) name the same class.
        """
        if isinstance(labels, bool) or not isinstance(labels, str | int | np.integer):
            raise ValueError(f"{self.column} must be a string of class ids, got {labels!r}")
        text = str(labels)
        tokens = text.split() if self.separator.isspace() else text.split(self.separator)
        tokens = [token.strip() for token in tokens]
        if not any(tokens):
            raise ValueError(
                f"{self.column} is empty: every image needs at least one class id "
                f"0..{self.num_classes - 1}"
            )
        vector = np.zeros(self.num_classes, dtype=np.uint8)
        for token in tokens:
            try:
                class_id = int(token)
            except ValueError:
                raise ValueError(
                    f"{self.column} {text!r}: {token!r} is not an integer class id "
                    f"(ids joined by {self.separator!r})"
                ) from None
            if not 0 <= class_id < self.num_classes:
                raise ValueError(
                    f"{self.column} {text!r}: class id {class_id} is outside "
                    f"0..{self.num_classes - 1} (label set {self.name})"
                )
            vector[class_id] = 1
        return vector

    def format(self, vector: Sequence[float] | np.ndarray) -> str:
        """Format a multi-hot (or 0/1 boolean) vector as a csv cell, ids ascending."""
        vector = np.asarray(vector)
        if vector.shape != (self.num_classes,):
            raise ValueError(
                f"expected a vector of {self.num_classes} class flags, got shape {vector.shape}"
            )
        return self.separator.join(str(i) for i in np.flatnonzero(vector))

    def to_matrix(self, cells: Iterable[object]) -> np.ndarray:
        """Parse many csv cells into an N x num_classes uint8 multi-hot matrix.

        The error of a bad cell names its position (0-based) in ``cells``.
        """
        rows = []
        for position, cell in enumerate(cells):
            try:
                rows.append(self.parse(cell))
            except ValueError as error:
                raise ValueError(f"row {position}: {error}") from None
        if not rows:
            return np.zeros((0, self.num_classes), dtype=np.uint8)
        return np.stack(rows)

    def names_of(self, class_ids: Iterable[int]) -> list[str]:
        return [self.class_names[int(i)] for i in class_ids]

    def slug(self, class_id: int) -> str:
        """A metric-name-safe label for one class: ``"08_peroxisomes"``."""
        name = self.class_names[class_id].lower().replace("&", "and")
        words = re.sub(r"[^0-9a-z]+", " ", name).split()
        return f"{class_id:02d}_" + "_".join(words)

    def check_class_ids(self, class_ids: Iterable[int], what: str) -> tuple[int, ...]:
        """``class_ids`` as ints, or HPAInputError naming ``what`` when one is outside the set."""
        ids = tuple(int(i) for i in class_ids)
        outside = [i for i in ids if not 0 <= i < self.num_classes]
        if outside:
            raise HPAInputError(
                f"{what}: class ids {outside} are outside 0..{self.num_classes - 1} "
                f"(label set {self.name}, {self.num_classes} classes)"
            )
        return ids

    def to_dict(self) -> dict:
        """Plain containers, for checkpoints, json files and ONNX metadata."""
        stored = asdict(self)
        stored["class_names"] = list(self.class_names)
        stored["minority_classes"] = list(self.minority_classes)
        return stored

    @classmethod
    def from_dict(cls, stored: Mapping) -> LabelSet:
        known = {"name", "class_names", "column", "separator", "id_column", "minority_classes"}
        return cls(**{key: value for key, value in stored.items() if key in known})


HPA2018 = LabelSet(
    name="hpa2018",
    class_names=HPA2018_CLASS_NAMES,
    column="Target",
    separator=" ",
    id_column="Id",
    minority_classes=HPA2018_MINORITY_CLASSES,
)

HPA2021 = LabelSet(
    name="hpa2021",
    class_names=HPA2021_CLASS_NAMES,
    column="Label",
    separator="|",
    id_column="ID",
    minority_classes=HPA2021_MINORITY_CLASSES,
)

BUILT_IN: dict[str, LabelSet] = {label_set.name: label_set for label_set in (HPA2018, HPA2021)}


def read_names_file(path: str | Path) -> tuple[str, ...]:
    """Class names, one per line (blank lines at the end ignored); the line number is the id."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise HPAInputError(f"labels.names_file {path}: cannot read it ({error})") from error
    while lines and not lines[-1].strip():
        lines.pop()
    names = tuple(line.strip() for line in lines)
    blank = [number + 1 for number, name in enumerate(names) if not name]
    if blank:
        raise HPAInputError(f"labels.names_file {path}: lines {blank} are empty (one name a line)")
    if not names:
        raise HPAInputError(f"labels.names_file {path}: no class names in it")
    return names


def build_label_set(config: Mapping | None) -> LabelSet:
    """The label set of a ``labels`` config node (conf/labels/*.yaml); None: hpa2018.

    A built-in name (hpa2018, hpa2021) takes its classes from this module unless a
    ``names_file`` is given; any other name needs a ``names_file``. ``column``, ``separator``,
    ``id_column`` and ``minority_classes`` override the built-in's when given.
    """
    config = dict(config or {"name": HPA2018.name})
    unknown = sorted(
        set(config) - {"name", "names_file", "column", "separator", "id_column", "minority_classes"}
    )
    if unknown:
        raise HPAInputError(f"labels: unknown key(s) {unknown}")
    name = str(config.get("name") or "custom")
    names_file = config.get("names_file")
    base = BUILT_IN.get(name)
    if names_file:
        class_names = read_names_file(names_file)
    elif base is not None:
        class_names = base.class_names
    else:
        raise HPAInputError(
            f"labels={name} needs labels.names_file=PATH (one class name per line); "
            f"built-in label sets: {sorted(BUILT_IN)}"
        )
    defaults = base.to_dict() if base is not None and not names_file else {}

    def pick(key: str, fallback):
        value = config.get(key)
        return value if value is not None else defaults.get(key, fallback)

    return LabelSet(
        name=name,
        class_names=class_names,
        column=pick("column", "Target"),
        separator=pick("separator", " "),
        id_column=pick("id_column", "Id"),
        minority_classes=tuple(pick("minority_classes", ())),
    )
