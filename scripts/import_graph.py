"""Import-graph facts for tti-ray (issue 20): cycles, upward imports between stages,
function-local imports of the project's own modules, and the largest module.

    python scripts/import_graph.py [--verbose]

Built on grimp (the graph import-linter uses). The stage order is read from the layers contract
in pyproject.toml (``[tool.importlinter]``, the one statement of it; docs/architecture.md draws
it); a tree that predates the contract is measured with :data:`DEFAULT_STAGES`, the same order.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
import tomllib
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tti_ray", "analysis")

# Lowest first; a stage may import only stages below it. Names in one tuple are one stage.
DEFAULT_STAGES: list[tuple[str, ...]] = [
    ("tti_ray.io", "tti_ray.lock", "tti_ray.cli", "tti_ray.trials", "tti_ray.provenance"),  # leaf
    ("tti_ray.config",),
    ("tti_ray.data",),
    ("tti_ray.model",),
    ("tti_ray.metrics",),
    ("tti_ray.interventions",),
    ("tti_ray.toy",),
    ("tti_ray.train",),
    ("tti_ray.tracking",),
    ("tti_ray.sae", "tti_ray.export"),
    ("tti_ray.fronts", "tti_ray.analysis"),  # the pure core (tti_ray.analysis before issue 20)
    ("tti_ray.sweep", "tti_ray.sae_eval"),
    ("analysis",),  # the user-facing CLIs
]


def contract_stages(pyproject: Path = ROOT / "pyproject.toml") -> list[tuple[str, ...]] | None:
    """The layers of the first ``layers`` contract in ``pyproject``, lowest first."""
    if not pyproject.exists():
        return None
    conf = tomllib.loads(pyproject.read_text()).get("tool", {}).get("importlinter", {})
    for contract in conf.get("contracts", []):
        if contract.get("type") == "layers":
            return [tuple(n.strip().strip("()") for n in re.split(r"[|:]", layer))
                    for layer in reversed(contract["layers"])]
    return None


STAGES: list[tuple[str, ...]] = contract_stages() or DEFAULT_STAGES


def stage_of(module: str) -> int | None:
    if module in PACKAGES[:1]:  # the root package (``__version__``) sits with the utilities
        return 0
    best: tuple[int, int] | None = None
    for i, names in enumerate(STAGES):
        for name in names:
            inside = module == name or module.startswith(name + ".")
            if inside and (best is None or len(name) > best[1]):
                best = (i, len(name))
    return None if best is None else best[0]


def sccs(graph: grimp.ImportGraph) -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    nodes = sorted(graph.modules)
    succ = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in nodes}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[set[str]] = []
    counter = 0
    for root in nodes:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            v, i = work.pop()
            if i == 0:
                index[v] = low[v] = counter
                counter += 1
                stack.append(v)
                on_stack.add(v)
            recurse = False
            for j in range(i, len(succ[v])):
                w = succ[v][j]
                if w not in index:
                    work.append((v, j + 1))
                    work.append((w, 0))
                    recurse = True
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            if recurse:
                continue
            if low[v] == index[v]:
                comp = set()
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.add(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(comp)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[v])
    return out


def local_imports() -> list[tuple[str, int, str]]:
    """Import statements of the project's own modules inside a function body."""
    found = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for fn in ast.walk(tree):
                if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                for node in ast.walk(fn):
                    if isinstance(node, ast.ImportFrom):
                        names = [("." * node.level) + (node.module or "")]
                    elif isinstance(node, ast.Import):
                        names = [a.name for a in node.names]
                    else:
                        continue
                    for n in names:
                        if n.startswith(".") or n.split(".")[0] in PACKAGES:
                            found.append((str(path.relative_to(ROOT)), node.lineno, n))
    # a nested function is walked once per enclosing function: keep each statement once
    return sorted(set(found))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--verbose", "-v", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    graph = grimp.build_graph(*PACKAGES, include_external_packages=False, cache_dir=None)

    cycles = sccs(graph)
    upward = []
    unplaced = set()
    for m in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(m)):
            a, b = stage_of(m), stage_of(imported)
            if a is None or b is None:
                unplaced.update(x for x, s in ((m, a), (imported, b)) if s is None)
                continue
            if b > a:
                lines = [d["line_number"] for d in graph.get_import_details(
                    importer=m, imported=imported)]
                upward.append((m, imported, lines))
    local = local_imports()
    sizes = sorted(
        ((len(p.read_text().splitlines()), str(p.relative_to(ROOT)))
         for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")),
        reverse=True,
    )

    print(f"modules: {len(graph.modules)}")
    print(f"import cycles (strongly connected components > 1 module): {len(cycles)}")
    for c in cycles:
        print(f"  {len(c)}: {', '.join(sorted(c))}" if args.verbose else
              f"  {len(c)} modules, e.g. {', '.join(sorted(c)[:4])}")
    print(f"upward imports between stages: {len(upward)}")
    for m, imp, lines in upward:
        print(f"  {m} -> {imp} (line {', '.join(map(str, lines))})")
    per_pkg = {pkg: sum(1 for p, _, _ in local if p.startswith(pkg + "/")) for pkg in PACKAGES}
    print(f"function-local imports of own modules: {len(local)} "
          f"({', '.join(f'{k}/: {v}' for k, v in per_pkg.items())})")
    if args.verbose:
        for path, line, name in local:
            print(f"  {path}:{line} {name}")
    print(f"largest module: {sizes[0][0]} lines ({sizes[0][1]})")
    if args.verbose:
        for n, p in sizes[:8]:
            print(f"  {n} {p}")
    if unplaced:
        print(f"modules outside every stage: {', '.join(sorted(unplaced))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
