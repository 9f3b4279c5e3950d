"""Class activation maps of a checkpoint for a few images:
``python -m hpa.explain ckpt_path=CKPT [ids=[...]] [method=gradcam] [classes=predicted]``
(``hpa-explain``). See hpa/run/explaining.py and conf/explain.yaml."""

from __future__ import annotations

from hpa.run.entry import entry_point

main = entry_point("explain", "hpa.run.explaining:explain")


if __name__ == "__main__":
    main()
