"""Errors that stop a run with one clear message instead of a traceback."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("hpa")


class HPAInputError(Exception):
    """Bad input data or configuration: the message names the file or csv row and the problem."""


@contextmanager
def exit_on_input_error() -> Iterator[None]:
    """Turn an HPAInputError into one logged line and exit code 2 (no traceback).

    SystemExit is not an Exception, so Hydra's own error report lets it through unchanged.
    With ``HYDRA_FULL_ERROR=1`` the traceback is logged too.
    """
    try:
        yield
    except HPAInputError as error:
        log.error("%s", error, exc_info=os.environ.get("HYDRA_FULL_ERROR") == "1")
        raise SystemExit(2) from None
