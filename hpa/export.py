"""Export a checkpoint as an ONNX model with its thresholds and config:
``python -m hpa.export ckpt_path=CKPT [output=PATH]`` (``hpa-export``). See hpa/run/exporting.py
and conf/export.yaml."""

from __future__ import annotations

from hpa.run.entry import entry_point
from hpa.run.exporting import export

main = entry_point("export")(export)


if __name__ == "__main__":
    main()
