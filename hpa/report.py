"""Draw the figures of a finished run: ``python -m hpa.report RUN_DIR [--data-root DIR]``
(``hpa-report``). Writes ``RUN_DIR/report/`` (see hpa/run/reporting.py)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hpa.cli import argument_parser, log_to_stderr
from hpa.core.errors import exit_on_input_error
from hpa.run.reporting import write_report

EXAMPLES = """examples:
  hpa-report logs/train/runs/2026-01-01_00-00-00
  hpa-report RUN_DIR --data-root /data/hpa2018     # when the data has moved
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argument_parser(
        "hpa-report", "Draw the figures of a finished hpa run into RUN_DIR/report/.", EXAMPLES
    )
    parser.add_argument("run_dir", type=Path, help="a run directory (with metrics.json)")
    parser.add_argument("--data-root", type=Path, help="data root (default: the run's data.root)")
    args = parser.parse_args(argv)
    log_to_stderr()
    with exit_on_input_error():
        write_report(args.run_dir, args.data_root)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
