"""Cellpose as a segmentation provider (the optional extra ``pip install 'hpa[cellpose]'``).

Cellpose downloads its weights on first use; on a cluster node without a network that download
hangs or fails deep inside a worker. This provider therefore finds the weights file itself when
it is built, before any image is read, and stops with a message naming the file to place where:
``model_path`` (a local file) or, for a named model, Cellpose's own cache folder
(``$CELLPOSE_LOCAL_MODELS_PATH``, else ``~/.cellpose/models``, as Cellpose itself looks).

Both Cellpose generations are supported: 3.x (``cyto3`` and the other ResNet models, which take
a cytoplasm channel and a nucleus channel) and 4.x (``cpsam``/``cpsam_v2``, which take up to three
channels in any order). The network gets a three-channel image: the cytoplasm (mean of red and yellow),
the nucleus (blue), and zeros.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import inspect
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from hpa.core.errors import HPAInputError
from hpa.data.cells.base import ImageSegmenter
from hpa.data.cells.channels import as_channel_stack

REFERENCE_SIDE = 512
"""``diameter`` is in pixels of an image of this side, scaled to the image segmented."""

INSTALL_HINT = "pip install 'hpa[cellpose]'"

_LEGACY_TORCH_NAMES = {"cyto", "cyto2", "nuclei"}
"""Cellpose 3 models whose weights file is ``{name}torch_0`` (the others are named as the model)."""


def cellpose_major_version() -> int:
    """The installed Cellpose's major version; HPAInputError when it is not installed."""
    if importlib.util.find_spec("cellpose") is None:
        raise HPAInputError(f"segment=cellpose needs the cellpose package: {INSTALL_HINT}")
    return int(importlib.metadata.version("cellpose").split(".")[0])


def default_model() -> str:
    """The installed Cellpose's own default model: its ``CellposeModel``'s default
    ``pretrained_model`` (``cpsam`` in 4.0, ``cpsam_v2`` in 4.2), or ``cyto3`` in Cellpose 3,
    whose default is no model at all."""
    from cellpose import models  # the optional extra: imported only when used

    default = inspect.signature(models.CellposeModel).parameters["pretrained_model"].default
    return default if isinstance(default, str) else "cyto3"


def cellpose_models_dir() -> Path:
    """Where Cellpose keeps (and downloads) its named models."""
    configured = os.environ.get("CELLPOSE_LOCAL_MODELS_PATH")
    return Path(configured) if configured else Path.home() / ".cellpose" / "models"


def cellpose_weights_path(model: str, model_path: str | None, major_version: int) -> Path:
    """The weights file the model will load; HPAInputError, naming the file, when it is absent.

    ``model_path`` wins when given. Otherwise the model is looked up in ``cellpose_models_dir()``
    under the file name Cellpose uses: ``{model}torch_0`` for Cellpose 3's cyto, cyto2 and nuclei,
    ``{model}`` for the others (cyto3, cpsam, user-trained models).
    """
    if model_path is not None:
        path = Path(model_path).expanduser()
        if not path.is_file():
            raise HPAInputError(
                f"Cellpose weights file not found: {path} (segment.model_path); place the "
                "weights file there, or set model_path: null to use a model from Cellpose's cache"
            )
        return path
    legacy = major_version < 4 and model in _LEGACY_TORCH_NAMES
    path = cellpose_models_dir() / (f"{model}torch_0" if legacy else model)
    if not path.is_file():
        raise HPAInputError(
            f"Cellpose weights for model {model!r} not found at {path}: this run does not "
            f"download them. Place the file {path.name} in {path.parent} (Cellpose "
            f"{major_version}.x saves it there on its first run with a network, or get it from "
            "https://huggingface.co/mouseland/cellpose-sam or https://www.cellpose.org/models), "
            "set CELLPOSE_LOCAL_MODELS_PATH to the folder holding it, or give its path as "
            "segment.model_path"
        )
    return path


@dataclass(eq=False)
class CellposeSegmenter(ImageSegmenter):
    """Cellpose's network on the cytoplasm (red + yellow) and nucleus (blue) channels.

    Building one checks that cellpose is installed and its weights are on disk (module doc); the
    network itself is loaded on the first ``segment``, in the process that segments.
    """

    name: ClassVar[str] = "cellpose"
    version: ClassVar[int] = 1

    model: str | None = None
    """A model in Cellpose's cache folder; null: the installed Cellpose's own default (cpsam or
    cpsam_v2 on 4.x, cyto3 on 3.x)."""
    model_path: str | None = None
    """A local weights file, used instead of ``model``'s cached file."""
    diameter: float = 100.0
    """Typical cell diameter in pixels of a 512 px image (scaled with the image); Cellpose
    rescales the image so that it matches the cells it was trained on."""
    flow_threshold: float = 0.4
    """Cellpose's flow error threshold: lower keeps only cells with consistent flows."""
    cellprob_threshold: float = 0.0
    """Cellpose's cell probability threshold: lower finds more and larger cells."""
    gpu: bool = False
    """Run the network on a CUDA GPU when one is available."""

    _network: Any = field(default=None, init=False, repr=False)
    _major_version: int = field(default=0, init=False, repr=False)
    _weights: Path | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.diameter > 0:
            raise HPAInputError(f"segment.diameter must be > 0, got {self.diameter}")
        self._major_version = cellpose_major_version()
        if self.model is None:
            self.model = default_model()
        self._weights = cellpose_weights_path(self.model, self.model_path, self._major_version)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled for worker processes without the loaded network: each loads its own."""
        state = self.__dict__.copy()
        state["_network"] = None
        return state

    def segment(self, image: Any) -> np.ndarray:
        """The int32 (H, W) cell labels of a (4, H, W) RGBY image or an RGBY channel mapping."""
        stack = as_channel_stack(image)
        cytoplasm = (stack[0] + stack[3]) / 2
        network_input = np.stack([cytoplasm, stack[2], np.zeros_like(cytoplasm)], axis=-1)
        diameter = self.diameter * max(stack.shape[1:]) / REFERENCE_SIDE
        options = {
            "diameter": diameter,
            "channel_axis": 2,
            "flow_threshold": self.flow_threshold,
            "cellprob_threshold": self.cellprob_threshold,
        }
        if self._major_version < 4:
            options["channels"] = [1, 2]  # cytoplasm in the 1st plane, nucleus in the 2nd
        masks = self.network().eval(network_input, **options)[0]
        return np.asarray(masks, dtype=np.int32)

    def network(self) -> Any:
        """The Cellpose model, loaded from the checked weights file on first use."""
        if self._network is None:
            from cellpose import models  # the optional extra: imported only when used

            if self._major_version >= 4 or self.model_path is not None:
                self._network = models.CellposeModel(
                    gpu=self.gpu, pretrained_model=str(self._weights)
                )
            else:
                # Cellpose 3 knows its built-in models' training diameter by name only; the
                # weights file was found in its cache, so nothing is downloaded
                self._network = models.CellposeModel(gpu=self.gpu, model_type=self.model)
        return self._network
