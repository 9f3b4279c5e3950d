"""Predict with an exported .onnx file and onnxruntime alone: no torch, Lightning or timm.

The file written by ``hpa.integrations.onnx_export`` maps a uint8 RGBY batch (N x 4 x S x S, S
its image size) to its label set's class probabilities, and carries in its metadata everything needed to
turn them into decisions: the class names, the per-class thresholds and ``ensure_one_label``.
This module needs numpy and onnxruntime only (it imports hpa's numpy-only modules), so a machine
that serves predictions does not install the training stack.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime

from hpa.core.errors import HPAInputError
from hpa.core.labels import HPA2018, LabelSet
from hpa.evaluation.thresholds import binarize

log = logging.getLogger(__name__)

INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"

# metadata_props keys of the exported file; the values are JSON, except the training config
CLASS_NAMES_KEY = "hpa.class_names"
LABEL_SET_KEY = "hpa.label_set"  # LabelSet.to_dict(); files exported before it: the 2018 set
THRESHOLDS_KEY = "hpa.class_thresholds"
ENSURE_ONE_LABEL_KEY = "hpa.ensure_one_label"
IMAGE_SIZE_KEY = "hpa.image_size"
# the size images are read at before their centre image_size crop (a run trained on crops,
# data.load_size); files exported before it: the image size
LOAD_SIZE_KEY = "hpa.load_size"
MODEL_NAME_KEY = "hpa.model_name"
TRAIN_CONFIG_KEY = "hpa.train_config"  # the training run's config, as the exporter was given it
REQUIRED_KEYS = (CLASS_NAMES_KEY, THRESHOLDS_KEY, ENSURE_ONE_LABEL_KEY, IMAGE_SIZE_KEY)

CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"


def execution_providers(cuda: bool = False) -> list[str]:
    """onnxruntime providers, best first: CUDA (when asked for and installed), then the CPU."""
    if cuda and CUDA_PROVIDER in onnxruntime.get_available_providers():
        return [CUDA_PROVIDER, CPU_PROVIDER]
    if cuda:
        log.warning(
            "onnxruntime has no %s here (install onnxruntime-gpu): running on the CPU",
            CUDA_PROVIDER,
        )
    return [CPU_PROVIDER]


def open_session(
    path: str | Path, providers: Sequence[str] | None = None, num_threads: int | None = None
) -> onnxruntime.InferenceSession:
    """An onnxruntime session of the file at ``path``; HPAInputError naming it if unreadable.

    ``num_threads`` sets the intra-op threads (None: onnxruntime's default, one per core).
    """
    path = Path(path)
    if not path.is_file():
        raise HPAInputError(f"ONNX model {path} does not exist")
    options = onnxruntime.SessionOptions()
    if num_threads is not None:
        options.intra_op_num_threads = num_threads
    try:
        return onnxruntime.InferenceSession(
            str(path), options, providers=list(providers or [CPU_PROVIDER])
        )
    except Exception as error:  # onnxruntime raises its own Fail/InvalidGraph/... types
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise HPAInputError(f"{path} is not a readable ONNX model: {reason}") from None


class OnnxPredictor:
    """Probabilities and 0/1 decisions of uint8 RGBY batches from an exported .onnx file.

    Attributes read from the file's metadata: ``label_set`` and its ``class_names``,
    ``thresholds`` (one float per class), ``ensure_one_label``, ``image_size`` (the side in pixels the images must have),
    ``load_size`` (the side images are read at before their centre ``image_size`` crop),
    ``model_name`` and ``train_config`` (the training config as text; "" when not recorded).
    """

    def __init__(
        self,
        path: str | Path,
        providers: Sequence[str] | None = None,
        num_threads: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.session = open_session(self.path, providers, num_threads)
        metadata = self.session.get_modelmeta().custom_metadata_map
        missing = [key for key in REQUIRED_KEYS if key not in metadata]
        if missing:
            raise HPAInputError(
                f"{self.path} was not exported by hpa: no {', '.join(missing)} in its metadata"
            )
        try:
            self.class_names: list[str] = json.loads(metadata[CLASS_NAMES_KEY])
            self.thresholds = np.asarray(json.loads(metadata[THRESHOLDS_KEY]), dtype=np.float64)
            self.ensure_one_label = bool(json.loads(metadata[ENSURE_ONE_LABEL_KEY]))
            self.image_size = int(json.loads(metadata[IMAGE_SIZE_KEY]))
            self.load_size = int(json.loads(metadata.get(LOAD_SIZE_KEY, "null")) or self.image_size)
        except (ValueError, TypeError) as error:
            raise HPAInputError(f"{self.path}: unreadable hpa metadata ({error})") from None
        if self.thresholds.shape != (len(self.class_names),):
            raise HPAInputError(
                f"{self.path}: {len(self.class_names)} class names but thresholds of shape "
                f"{self.thresholds.shape} in its metadata"
            )
        self.label_set = _label_set(self.path, metadata.get(LABEL_SET_KEY), self.class_names)
        self.model_name = metadata.get(MODEL_NAME_KEY, "")
        self.train_config = metadata.get(TRAIN_CONFIG_KEY, "")

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """(N, classes) float32 probabilities of a uint8 (N, 4, S, S) RGBY batch."""
        images = np.ascontiguousarray(images)
        expected = (4, self.image_size, self.image_size)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != expected:
            raise ValueError(
                f"{self.path} takes uint8 batches of shape (N, {', '.join(map(str, expected))}), "
                f"got {images.dtype} {images.shape}"
            )
        (probabilities,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: images})
        return probabilities

    def decide(self, probabilities: np.ndarray) -> np.ndarray:
        """(N, classes) uint8 0/1 decisions at the file's thresholds (``binarize``)."""
        return binarize(probabilities, self.thresholds, self.ensure_one_label)

    def predict(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, decisions) of a uint8 (N, 4, S, S) RGBY batch."""
        probabilities = self.probabilities(images)
        return probabilities, self.decide(probabilities)


def _label_set(path: Path, stored: str | None, class_names: Sequence[str]) -> LabelSet:
    """The label set in a file's metadata; files exported before label sets hold the 2018
    class names only."""
    if stored is None:
        if list(class_names) != list(HPA2018.class_names):
            raise HPAInputError(f"{path}: class names in its metadata but no label set")
        return HPA2018
    try:
        label_set = LabelSet.from_dict(json.loads(stored))
    except (ValueError, TypeError) as error:
        raise HPAInputError(f"{path}: unreadable label set in its metadata ({error})") from None
    if list(label_set.class_names) != list(class_names):
        raise HPAInputError(f"{path}: its label set and class names disagree")
    return label_set
