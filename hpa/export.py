"""Export a checkpoint as an ONNX model with its thresholds and config:
``python -m hpa.export ckpt_path=CKPT [output=PATH]`` (``hpa-export``). See hpa/run/exporting.py
and conf/export.yaml."""

from __future__ import annotations

from omegaconf import DictConfig

from hpa.run.entry import entry_point
from hpa.run.exporting import export


@entry_point("export")
def main(cfg: DictConfig) -> None:
    export(cfg)


if __name__ == "__main__":
    main()
