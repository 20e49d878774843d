"""The stage order of docs/architecture.md holds: import-linter's layers contract
(``[tool.importlinter]`` in pyproject.toml) passes, and no import cycle exists between modules
(grimp's graph, function-local imports included; the measurement is scripts/import_graph.py's)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]

# Cycles that another change removes; each entry names it. Empty is the goal.
KNOWN_CYCLES: set[frozenset[str]] = set()  # none: a new cycle fails the test


def _import_graph_script():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts/import_graph.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_layers_contract_is_kept():
    r = subprocess.run(
        [sys.executable, "-c",
         "import sys; from importlinter.cli import lint_imports_command; "
         "sys.exit(lint_imports_command())", "--no-cache"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "Contracts: 1 kept, 0 broken." in r.stdout, r.stdout[-4000:]


def test_no_import_cycles():
    tool = _import_graph_script()
    graph = grimp.build_graph("tti_ray", "analysis", include_external_packages=False,
                              cache_dir=None)
    cycles = {frozenset(c) for c in tool.sccs(graph)}
    assert cycles <= KNOWN_CYCLES, sorted(sorted(c) for c in cycles - KNOWN_CYCLES)


def test_every_module_is_in_a_stage():
    tool = _import_graph_script()
    graph = grimp.build_graph("tti_ray", "analysis", include_external_packages=False,
                              cache_dir=None)
    assert [m for m in sorted(graph.modules) if tool.stage_of(m) is None] == []
