"""How often each class occurs in the train split a run actually trains on.

Counted on the train split after skipped images are dropped and external images joined, so
that what depends on class frequencies (oversampling weights, loss weights, reports) describes
this run's data and no other: class statistics are never constants.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hpa.core.labels import LabelSet

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class ClassStatistics:
    """``counts[c]``: the number of the ``num_images`` train images that hold class ``c``."""

    label_set: LabelSet
    counts: np.ndarray
    num_images: int

    @classmethod
    def from_labels(cls, label_set: LabelSet, labels: np.ndarray) -> ClassStatistics:
        """The statistics of an N x C multi-hot label matrix (one row per train image)."""
        labels = np.asarray(labels)
        if labels.ndim != 2 or labels.shape[1] != label_set.num_classes:
            raise ValueError(
                f"labels {labels.shape} must be N x {label_set.num_classes} "
                f"(label set {label_set.name})"
            )
        counts = labels.astype(bool).sum(axis=0).astype(np.int64)
        counts.setflags(write=False)
        return cls(label_set, counts, len(labels))

    @property
    def rates(self) -> np.ndarray:
        """The fraction of the train images that hold each class (0 without images)."""
        return self.counts / max(self.num_images, 1)

    @property
    def absent_classes(self) -> tuple[int, ...]:
        """The classes no train image holds."""
        return tuple(int(class_id) for class_id in np.flatnonzero(self.counts == 0))

    def table(self) -> pd.DataFrame:
        """One row per class: class_id, class_name, train_images, train_rate."""
        return pd.DataFrame(
            {
                "class_id": list(self.label_set.class_ids),
                "class_name": list(self.label_set.class_names),
                "train_images": self.counts,
                "train_rate": self.rates,
            }
        )

    def warn_about_absent_classes(self) -> None:
        """One warning naming every class without a train image (nothing when there is none)."""
        absent = self.absent_classes
        if not absent:
            return
        named = ", ".join(
            f"{class_id} ({name})"
            for class_id, name in zip(absent, self.label_set.names_of(absent), strict=True)
        )
        log.warning(
            "%d class(es) of label set %s have no image in the train split (%d images): %s; "
            "the model cannot learn them",
            len(absent),
            self.label_set.name,
            self.num_images,
            named,
        )
