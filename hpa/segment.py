"""Segment the cells of every image of a 2021-layout root: ``python -m hpa.segment data=hpa2021
data.root=ROOT`` (``hpa-segment``). See hpa/run/segmenting.py and conf/cell_masks.yaml."""

from __future__ import annotations

from hpa.run.entry import entry_point

main = entry_point("cell_masks", "hpa.run.segmenting:segment")


if __name__ == "__main__":
    main()
