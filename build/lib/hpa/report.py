"""Draw the figures of a finished run: ``python -m hpa.report RUN_DIR [--data-root DIR]``
(``hpa-report``). Writes ``RUN_DIR/report/`` (see hpa/evaluation/run_report.py)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from hpa.errors import exit_on_input_error
from hpa.evaluation.run_report import write_report

EXAMPLES = """examples:
  hpa-report logs/train/runs/2026-01-01_00-00-00
  hpa-report RUN_DIR --data-root /data/hpa2018     # when the data has moved
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hpa-report",
        description="Draw the figures of a finished hpa run into RUN_DIR/report/.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_dir", type=Path, help="a run directory (with metrics.json)")
    parser.add_argument("--data-root", type=Path, help="data root (default: the run's data.root)")
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with exit_on_input_error():
        write_report(args.run_dir, args.data_root)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
