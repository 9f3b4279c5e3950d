"""Command line: ``python -m hpa.data.synthetic ROOT --n N --size S --seed K [--n-test M]``."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from hpa.core.errors import HPAInputError
from hpa.data.synthetic.writer import ensure_dataset

logger = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hpa.data.synthetic",
        description="Write (or reuse) a synthetic HPA data set in the Kaggle layout.",
    )
    parser.add_argument("root", type=Path, help="directory to write (replaced if synthetic)")
    parser.add_argument("--n", type=int, required=True, help="number of train images")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-test", type=int, default=0, help="number of test images")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        ensure_dataset(args.root, args.n, args.size, args.seed, args.n_test, not args.no_progress)
    except (HPAInputError, ValueError) as error:
        logger.error("%s", error)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
