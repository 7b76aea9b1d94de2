"""The pure core (streams/core/) imports only the standard library; our packages are our own."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import models
import streams
import tables

ROOT = Path(__file__).resolve().parents[2]
PURE_MODULES = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "streams" / "core").glob("*.py"))
#: The pure modules may import each other, and nothing else of ours.
PURE_NAMES = {"streams.core"}


def test_the_routing_core_imports_only_the_standard_library() -> None:
    for relative in PURE_MODULES:
        tree = ast.parse((ROOT / relative).read_text())
        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        foreign = {
            n
            for n in names
            if n.split(".")[0] not in sys.stdlib_module_names
            and not any(n == p or n.startswith(p + ".") for p in PURE_NAMES)
        }
        assert not foreign, f"{relative} imports {sorted(foreign)}"


def test_tables_models_and_streams_are_this_projects_packages() -> None:
    # PyTables installs a top-level `tables`, and PyPI has a `models`: make sure ours win.
    for package in (tables, models, streams):
        assert package.__file__ is not None
        assert Path(package.__file__).resolve().parent.parent == ROOT
