"""Predict a Kaggle-layout test folder and write a submission:
``python -m hpa.predict ckpt_path=PATH data.root=ROOT [tta=dihedral]`` (``hpa-predict``).
See hpa/run/predicting.py and conf/predict.yaml."""

from __future__ import annotations

from hpa.run.entry import entry_point

main = entry_point("predict", "hpa.run.predicting:predict")


if __name__ == "__main__":
    main()
