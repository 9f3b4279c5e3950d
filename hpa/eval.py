"""Evaluate checkpoints on their run's test split: ``python -m hpa.eval ckpt_path=PATH``
(``hpa-eval``). See hpa/run/evaluating.py and conf/eval.yaml."""

from __future__ import annotations

from hpa.run.entry import entry_point

main = entry_point("eval", "hpa.run.evaluating:evaluate")


if __name__ == "__main__":
    main()
