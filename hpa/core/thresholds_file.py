"""``thresholds.json``: one decision threshold per class of the run's label set.

``{"thresholds": {"0": t0, ...}, "class_names": {"0": name, ...}}``: the names say which label
set the values belong to, so a file is never applied to another set's classes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from hpa.core.errors import HPAInputError
from hpa.core.io import write_json
from hpa.core.labels import LabelSet


def save_thresholds(path: str | Path, thresholds: np.ndarray, label_set: LabelSet) -> None:
    """Write the thresholds of ``label_set``'s classes atomically."""
    values = checked_thresholds(thresholds, label_set.num_classes, source="thresholds to save")
    write_json(
        path,
        {
            "thresholds": {str(i): float(value) for i, value in enumerate(values)},
            "class_names": {str(i): name for i, name in enumerate(label_set.class_names)},
        },
    )


def load_thresholds(path: str | Path, label_set: LabelSet | None = None) -> np.ndarray:
    """Read thresholds written by ``save_thresholds``; HPAInputError naming the file if invalid,
    or (given ``label_set``) if its class names are another label set's."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise HPAInputError(f"{path}: cannot read thresholds JSON ({error})") from error
    entries = data.get("thresholds") if isinstance(data, dict) else None
    if not isinstance(entries, dict) or not entries:
        raise HPAInputError(f'{path}: expected a "thresholds" object with keys "0", "1", ...')
    num_classes = len(entries) if label_set is None else label_set.num_classes
    expected_keys = {str(i) for i in range(num_classes)}
    if set(entries) != expected_keys:
        raise HPAInputError(
            f'{path}: expected a "thresholds" object with keys "0".."{num_classes - 1}"'
        )
    names = data.get("class_names")
    if label_set is not None and isinstance(names, dict):
        stored = [names.get(str(i)) for i in range(num_classes)]
        if stored != list(label_set.class_names):
            raise HPAInputError(
                f"{path}: its class names are not those of the label set {label_set.name}"
            )
    values = [entries[str(i)] for i in range(num_classes)]
    # JSON strings and booleans would pass np.asarray(dtype=float); only numbers are accepted.
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise HPAInputError(f"{path}: thresholds must be numbers, got {values}")
    return checked_thresholds(values, num_classes, source=str(path))


def checked_thresholds(values: object, num_classes: int, source: str) -> np.ndarray:
    """``num_classes`` finite floats in [0, 1], else HPAInputError naming ``source``."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise HPAInputError(f"{source}: thresholds must be numbers ({error})") from error
    if array.shape != (num_classes,):
        raise HPAInputError(f"{source}: expected {num_classes} thresholds, got shape {array.shape}")
    bad = [i for i, v in enumerate(array) if not (math.isfinite(v) and 0.0 <= v <= 1.0)]
    if bad:
        raise HPAInputError(
            f"{source}: thresholds of classes {bad} are not finite values in [0, 1]"
        )
    return array
