"""The package's layers only import downwards, and no module holds a class list or count.

The layer contract is pyproject.toml's ``[tool.importlinter]`` (docs/development.md, "Layers").
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "hpa"

# The only modules that may spell class names or counts: the label sets themselves, and the
# Kaggle 2018 facts the synthetic generator draws from.
LABEL_MODULES = {PACKAGE / "core" / "labels.py", PACKAGE / "data" / "synthetic" / "labels.py"}
# Names that held the 2018 class list or its statistics as constants before label sets.
RETIRED_NAMES = {
    "NUM_CLASSES",
    "CLASS_NAMES",
    "KAGGLE_CLASS_COUNTS",
    "NUM_KAGGLE_TRAIN_IMAGES",
    "SEED_MINORITY_CLASSES",
}


def test_imports_only_point_down() -> None:
    # in a process of its own: import-linter configures logging, disabling the loggers that
    # exist in this one; it reads pyproject.toml from the working directory
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "layers point down KEPT" in result.stdout


def _modules() -> list[Path]:
    return sorted(path for path in PACKAGE.rglob("*.py") if path not in LABEL_MODULES)


@pytest.mark.parametrize("path", _modules(), ids=lambda path: str(path.relative_to(REPO)))
def test_no_module_outside_the_label_sets_holds_a_class_constant(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            problems += [
                f"line {node.lineno}: imports {alias.name}"
                for alias in node.names
                if alias.name in RETIRED_NAMES
            ]
        elif isinstance(node, ast.Attribute) and node.attr in RETIRED_NAMES:
            problems.append(f"line {node.lineno}: reads .{node.attr}")
        elif isinstance(node, ast.Name) and node.id in RETIRED_NAMES:
            problems.append(f"line {node.lineno}: names {node.id}")
        elif isinstance(node, ast.Constant) and node.value in (19, 28) and type(node.value) is int:
            problems.append(f"line {node.lineno}: the literal {node.value} (a class total?)")
    assert not problems, f"{path.relative_to(REPO)}: " + "; ".join(problems)
