"""Pretrained timm weights, found before any work: in the local cache, a local file, or fetched.

A run with ``model.pretrained=true`` checks here, before reading data, that the weights can be
had: ``model.pretrained_path`` (a local file), or timm's cache (the Hugging Face hub cache,
``$HF_HOME``, or torch hub's for weights served by URL), or else the hub is reachable and the
weights are fetched now. On a compute node without network the run stops at once with a message
saying what to do, instead of the hub's client retrying for minutes inside the first epoch.

Fill the cache on a machine with network with ``python -m hpa.weights fetch model=resnet50``.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import timm
import torch

from hpa.core.errors import HPAInputError

log = logging.getLogger(__name__)

HUB_HOST = "huggingface.co"
HUB_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_HUB_PREFIXES = ("hf-hub:", "hf_hub:")
_PROBE_TIMEOUT_S = 5.0


def _hub_id(name: str) -> str | None:
    """The Hugging Face repository timm loads ``name``'s weights from, if any."""
    if name.startswith(_HUB_PREFIXES):
        return name.split(":", 1)[1]
    config = timm.models.get_pretrained_cfg(name)
    return getattr(config, "hf_hub_id", None) if config is not None else None


def _weights_url(name: str) -> str | None:
    config = timm.models.get_pretrained_cfg(name)
    return getattr(config, "url", None) if config is not None else None


def cached_weights(name: str) -> Path | None:
    """The file of ``name``'s pretrained weights in the local cache, or None."""
    from huggingface_hub import try_to_load_from_cache

    hub_id = _hub_id(name)
    if hub_id:
        for filename in HUB_WEIGHT_FILES:
            found = try_to_load_from_cache(hub_id, filename)
            if isinstance(found, str):
                return Path(found)
    url = _weights_url(name)
    if url:
        path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name
        if path.is_file():
            return path
    return None


def hub_reachable(timeout: float = _PROBE_TIMEOUT_S) -> bool:
    """Whether a connection to the hub opens (one TCP connect, no retries)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    try:
        socket.create_connection((HUB_HOST, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def fetch_weights(name: str) -> Path:
    """Download ``name``'s pretrained weights into timm's cache (as a run would) and return the
    cached file."""
    try:
        timm.create_model(name, pretrained=True)
    except Exception as error:  # the hub client raises many types for a failed download
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise HPAInputError(f"cannot fetch the pretrained weights of {name}: {reason}") from None
    found = cached_weights(name)
    if found is None:
        raise HPAInputError(f"fetched the weights of {name}, but they are not in the cache")
    return found


def ensure_pretrained_weights(
    name: str, pretrained: bool, pretrained_path: str | None = None
) -> None:
    """Refuse a run whose pretrained weights cannot be had, before any work; fetch them now when
    they are not cached and the hub is reachable."""
    if not pretrained:
        return
    if pretrained_path is not None:
        if not Path(pretrained_path).is_file():
            raise HPAInputError(f"model.pretrained_path={pretrained_path}: no such file")
        return
    cached = cached_weights(name)
    if cached is not None:
        log.info("pretrained weights of %s: %s", name, cached)
        return
    if not hub_reachable():
        raise HPAInputError(
            f"model {name} starts from pretrained weights (model.pretrained=true), which are not "
            f"in the local cache, and {HUB_HOST} cannot be reached from here. Either fill the "
            f"cache on a machine with network: `python -m hpa.weights fetch model.name={name}` "
            "(it writes under $HF_HOME, default ~/.cache/huggingface; share or copy that folder, "
            "and set HF_HUB_OFFLINE=1 on the offline node), or give a local weights file with "
            "model.pretrained_path=FILE, or train from scratch with model.pretrained=false"
        )
    log.info("fetching the pretrained weights of %s from %s", name, HUB_HOST)
    fetch_weights(name)
