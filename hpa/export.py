"""Export a checkpoint as an ONNX model with its thresholds and config:
``python -m hpa.export ckpt_path=CKPT [output=PATH]`` (``hpa-export``). See hpa/run/exporting.py
and conf/export.yaml."""

from __future__ import annotations

from hpa.run.entry import entry_point

main = entry_point("export", "hpa.run.exporting:export")


if __name__ == "__main__":
    main()
