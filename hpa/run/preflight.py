"""Every name a run needs, resolved and checked before any data is read, hashed or cached.

A typo (``model.name=resnet9000``, ``loss=focall``, ``model.thresholds=rated``) used to show only
once the data had been validated, hashed for duplicates, split and cached: minutes on the Kaggle
set. ``check_run_config`` builds what the config names, cheaply and without data: the label
set, the backbone (without pretrained weights), the loss, the threshold policy, the test-time
augmentation, the callbacks, and for ``cells=cam`` the class maps at ``cells.output_stride``. Optimizer and scheduler values are left to the run: an Optuna
trial with an impossible value must fail as a trial, not stop the sweep. The data
settings are checked by the data module's ``from_config`` and the cell stage by
``training_cell_stage``, both before any data is read.
"""

from __future__ import annotations

import numpy as np
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from hpa.core.errors import HPAInputError
from hpa.core.labels import build_label_set
from hpa.data.class_statistics import ClassStatistics
from hpa.models.backbones import check_backbone_name
from hpa.models.map_consistency import check_tiles
from hpa.run import builders
from hpa.run.cells import check_model_for_cells


def check_run_config(cfg: DictConfig) -> None:
    """HPAInputError naming the first name of ``cfg`` that a run could not build."""
    label_set = build_label_set(builders.plain_config(cfg.get("labels")))
    check_backbone_name(cfg.model.name)
    if cfg.model.get("map_consistency", 0) > 0:
        check_tiles(int(cfg.data.image_size), int(cfg.model.get("map_consistency_tiles", 2)))
    # balanced weights need class counts: one image of every class stands in for the split's
    placeholder = ClassStatistics(label_set, np.ones(label_set.num_classes, dtype=np.int64), 2)
    try:
        module = instantiate(
            cfg.model,
            loss=builders.with_train_class_counts(
                builders.plain_config(cfg.get("loss")), placeholder
            ),
            optimizer=builders.plain_config(cfg.get("optimizer")),
            scheduler=builders.plain_config(cfg.get("scheduler")),
            labels=label_set.to_dict(),
            pretrained=False,
            pretrained_path=None,
            _recursive_=False,
            _convert_="all",
        )
        builders.build_callbacks(cfg)
    except InstantiationException as error:
        raise HPAInputError(f"the run's config cannot be built: {_reason(error)}") from None
    check_model_for_cells(builders.plain_config(cfg.get("cells")), module, int(cfg.data.image_size))
    del module


def _reason(error: BaseException) -> str:
    cause = error.__cause__ or error
    return str(cause).strip().splitlines()[-1] if str(cause).strip() else type(cause).__name__
