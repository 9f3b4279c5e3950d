"""Keep secrets from the environment out of logs, logger configs and config dumps.

A secret is the value of an environment variable whose name ends in ``_KEY`` or contains
``TOKEN``, ``SECRET`` or ``PASSWORD`` (``WANDB_API_KEY``, ``HF_TOKEN``...). A config value that
holds one (e.g. through ``${oc.env:...}``), or whose key names a secret, is replaced by ``***``.
"""

from __future__ import annotations

import os
import re

REDACTED = "***"
SECRET_NAME = re.compile(r"(_KEY$|TOKEN|SECRET|PASSWORD)", re.IGNORECASE)
_MIN_SECRET_LENGTH = 4  # shorter values ("1", "true") are not worth hiding and match everywhere


def secret_values(environ=os.environ) -> list[str]:
    return [
        value
        for name, value in environ.items()
        if SECRET_NAME.search(name) and len(value) >= _MIN_SECRET_LENGTH
    ]


def redact(value, secrets: list[str] | None = None):
    """A copy of a plain config (dicts, lists, scalars) with every secret replaced by ``***``."""
    secrets = secret_values() if secrets is None else secrets
    if isinstance(value, dict):
        return {
            key: REDACTED
            if isinstance(key, str) and SECRET_NAME.search(key) and value[key] not in (None, "")
            else redact(item, secrets)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(redact(item, secrets) for item in value)
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, REDACTED)
    return value
