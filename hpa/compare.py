"""Compare finished training runs: ``python -m hpa.compare PATH... [options]`` (``hpa-compare``).

One row per run (the seed report's results table), or with ``--group-seeds`` one row per group of
runs that differ only in their seed, each metric as mean and standard deviation. See
hpa/evaluation/comparison.py.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from hpa.cli import argument_parser, log_to_stderr
from hpa.core.io import write_atomic
from hpa.core.metric_names import VAL_F1_MACRO
from hpa.evaluation.comparison import FORMATS, CompareError, compare_runs, group_seeds, render

log = logging.getLogger(__name__)

EXAMPLES = """examples:
  hpa-compare logs/train/multiruns/2026-01-01_00-00-00
  hpa-compare logs/train --sort test/f1_macro --format markdown
  hpa-compare logs/recipes --group-seeds          # runs of seeds 0,1,2: mean ± sd
"""


def _parser() -> argparse.ArgumentParser:
    parser = argument_parser("hpa-compare", "Compare finished hpa training runs.", EXAMPLES)
    parser.add_argument("paths", nargs="+", help="run directories, multirun folders or folders")
    parser.add_argument("--sort", default=VAL_F1_MACRO, help=f"column to sort by ({VAL_F1_MACRO})")
    parser.add_argument("--ascending", action="store_true", help="sort ascending")
    parser.add_argument(
        "--group-seeds",
        action="store_true",
        help="one row per group of runs that differ only in their seed: mean and sd",
    )
    parser.add_argument("--format", choices=FORMATS, default="table", dest="fmt")
    parser.add_argument("--output", type=Path, help="write to this file (atomically)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI; returns the exit code (0, or 2 for a missing path / no runs / bad column)."""
    args = _parser().parse_args(argv)
    log_to_stderr()
    table = group_seeds if args.group_seeds else compare_runs
    try:
        frame = table(args.paths, sort_by=args.sort, ascending=args.ascending)
    except CompareError as error:
        log.error("%s", error)
        return 2
    text = render(frame, args.fmt)
    if args.output is None:
        sys.stdout.write(text)
    else:
        write_atomic(args.output, lambda path: path.write_text(text))
        log.info("wrote %d rows to %s", len(frame), args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
