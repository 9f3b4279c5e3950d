"""What the argparse command-line tools share (hpa-report, hpa-compare, hpa-weights and the data
tools): a parser that shows examples under its help, and logging to stderr. The Hydra entry points
share hpa.run.entry instead."""

from __future__ import annotations

import argparse
import logging


def argument_parser(prog: str, description: str, examples: str) -> argparse.ArgumentParser:
    """A parser whose ``--help`` ends with ``examples`` as written."""
    return argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def log_to_stderr() -> None:
    """INFO and above to stderr, unless the caller (a test, a notebook) configured logging."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
