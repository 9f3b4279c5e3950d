"""Errors that stop a run with one clear message instead of a traceback."""

from __future__ import annotations


class HPAInputError(Exception):
    """Bad input data or configuration: the message names the file or csv row and the problem."""
