"""Pretrained weights for machines without network: ``python -m hpa.weights fetch|check
[model=NAME | model.name=TIMM_NAME] ...`` (``hpa-weights``).

``fetch`` downloads the timm weights a run with ``model.pretrained=true`` would load into the
local cache ($HF_HOME, default ~/.cache/huggingface); run it where there is network, then share or
copy that folder to the compute nodes and set ``HF_HUB_OFFLINE=1`` there. ``check`` says whether
they are cached. The overrides are those of ``hpa-train`` (``experiment=...`` works too).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from hydra import compose, initialize_config_dir

from hpa.cli import argument_parser, log_to_stderr
from hpa.core.errors import exit_on_input_error
from hpa.models.backbones import SEED_CNN_NAME
from hpa.models.pretrained import cached_weights, fetch_weights
from hpa.run.entry import CONFIG_DIR

log = logging.getLogger(__name__)

EXAMPLES = """examples:
  hpa-weights fetch model=resnet50
  hpa-weights fetch model=timm model.name=convnext_tiny
  hpa-weights check experiment=seed_resnet152_oversample
"""


def model_name(overrides: Sequence[str]) -> str:
    """``model.name`` of the training config composed with ``overrides``."""
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return str(compose("train", overrides=list(overrides)).model.name)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argument_parser(
        "hpa-weights", "Fetch or check the pretrained timm weights of a model.", EXAMPLES
    )
    parser.add_argument("action", choices=("fetch", "check"))
    parser.add_argument("overrides", nargs="*", help="hpa-train overrides choosing the model")
    args = parser.parse_args(argv)
    log_to_stderr()
    with exit_on_input_error():
        name = model_name(args.overrides)
        if name == SEED_CNN_NAME:
            log.info("%s has no pretrained weights", name)
            return 0
        cached = cached_weights(name)
        if args.action == "check":
            log.info("%s: %s", name, f"cached at {cached}" if cached else "not cached")
            return 0 if cached else 1
        path = cached or fetch_weights(name)
        log.info("%s: weights in %s", name, path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
