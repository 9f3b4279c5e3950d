"""Pick a segmentation provider from a config node: ``build_segmenter({name: ..., **settings})``.

Providers (``conf/segment/*.yaml``):
  watershed  nuclei and cells by scikit-image watersheds; no weights (the default)
  cellpose   Cellpose's network; the optional extra ``pip install 'hpa[cellpose]'``
  masks      label images made elsewhere, read from a folder

The node is checked in full before anything is read: an unknown provider, an unknown or missing
setting raises HPAInputError listing the valid ones, so a typo on the command line fails at once
rather than after hours of segmenting with a default.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from hpa.core.errors import HPAInputError
from hpa.data.cells.base import Segmenter
from hpa.data.cells.cellpose_model import CellposeSegmenter
from hpa.data.cells.mask_folder import MaskFolderSegmenter
from hpa.data.cells.watershed import WatershedSegmenter

PROVIDERS: dict[str, type] = {
    "watershed": WatershedSegmenter,
    "cellpose": CellposeSegmenter,
    "masks": MaskFolderSegmenter,
}
"""Provider name (``segment.name``) -> its class; the class's init fields are its settings."""


def provider_settings(name: str) -> list[str]:
    """The settings ``segment.name=name`` accepts, in declaration order."""
    return [field.name for field in dataclasses.fields(PROVIDERS[name]) if field.init]


def build_segmenter(config: Mapping[str, Any]) -> Segmenter:
    """The provider ``config.name`` with the other keys of ``config`` as its settings."""
    if isinstance(config, DictConfig):
        config = OmegaConf.to_container(config, resolve=True)
    settings = dict(config)
    name = settings.pop("name", None)
    if name not in PROVIDERS:
        raise HPAInputError(
            f"unknown segmenter segment.name={name!r}: choose one of {', '.join(PROVIDERS)}"
        )
    valid = provider_settings(name)
    unknown = sorted(key for key in settings if key not in valid)
    if unknown:
        raise HPAInputError(
            f"unknown setting(s) {', '.join(unknown)} of segment={name}; "
            f"its settings are: {', '.join(valid)}"
        )
    missing = [
        field.name
        for field in dataclasses.fields(PROVIDERS[name])
        if field.init
        and field.default is dataclasses.MISSING
        and settings.get(field.name, "???") == "???"
    ]
    if missing:
        raise HPAInputError(f"segment={name} needs segment.{', segment.'.join(missing)}")
    return PROVIDERS[name](**settings)
