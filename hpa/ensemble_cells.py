"""Ensemble the cell scores of several runs, weights chosen on validation cells:
``python -m hpa.ensemble_cells members=[RUN_A,RUN_B]`` (``hpa-ensemble-cells``). See
hpa/run/cell_ensembling.py and conf/ensemble_cells.yaml."""

from __future__ import annotations

from hpa.run.entry import entry_point

main = entry_point("ensemble_cells", "hpa.run.cell_ensembling:ensemble_cells")


if __name__ == "__main__":
    main()
