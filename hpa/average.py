"""Average the last epoch checkpoints of a run (pudae, 3rd in 2018) and finish the average as a
run: ``python -m hpa.average RUN_DIR --last 5 [overrides]`` (``hpa-average``).

``RUN_DIR --last K`` is shorthand for the Hydra overrides ``run_dir=RUN_DIR last=K``; any other
argument is passed to Hydra as it is (``trainer=gpu``, ``--help``). See
hpa/run/checkpoint_averaging.py and conf/average.yaml.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from hpa.run.entry import entry_point

# Hydra's own options whose value is the next argument (not a run directory)
_HYDRA_OPTIONS_WITH_VALUE = {
    "--cfg",
    "-c",
    "--package",
    "-p",
    "--config-path",
    "-cp",
    "--config-name",
    "-cn",
    "--config-dir",
    "-cd",
    "--info",
    "-i",
    "--experimental-rerun",
}


main = entry_point("average", "hpa.run.checkpoint_averaging:average_run")


def hydra_arguments(arguments: Sequence[str]) -> list[str]:
    """Command-line ``arguments`` with the shorthands made Hydra overrides: a bare path (no ``=``,
    not an option) is ``run_dir=PATH``, ``--last K`` or ``--last=K`` is ``last=K``."""
    translated: list[str] = []
    remaining = list(arguments)
    while remaining:
        argument = remaining.pop(0)
        if argument == "--last" and remaining:
            translated.append(f"last={remaining.pop(0)}")
        elif argument.startswith("--last="):
            translated.append(f"last={argument.removeprefix('--last=')}")
        elif not argument.startswith("-") and "=" not in argument:
            translated.append(f"run_dir={argument}")
        else:
            translated.append(argument)
            if argument in _HYDRA_OPTIONS_WITH_VALUE and remaining:
                translated.append(remaining.pop(0))
    return translated


def cli() -> None:
    """The console script: the shorthands translated, then the Hydra app."""
    sys.argv = [sys.argv[0], *hydra_arguments(sys.argv[1:])]
    main()


if __name__ == "__main__":
    cli()
