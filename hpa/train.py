"""Train, validate and test a classifier: ``python -m hpa.train [overrides]`` (``hpa-train``).

Examples::

    python -m hpa.train                                   # synthetic default, resnet18, CPU
    python -m hpa.train model=resnet50 data.oversample=true
    python -m hpa.train data=hpa data.root=/data/hpa trainer=gpu
    python -m hpa.train -m data.fold=0,1,2,3,4 data.num_folds=5

Returns the run's ``optimized_metric`` to a sweeper (Optuna); see hpa/run/training.py.
"""

from __future__ import annotations

from hpa.run.entry import entry_point

main = entry_point("train", "hpa.run.training:train_and_score")


if __name__ == "__main__":
    main()
