"""Evaluate checkpoints on their run's test split: ``python -m hpa.eval ckpt_path=PATH``
(``hpa-eval``). See hpa/run/evaluating.py and conf/eval.yaml."""

from __future__ import annotations

from omegaconf import DictConfig

from hpa.run.entry import entry_point
from hpa.run.evaluating import evaluate


@entry_point("eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
