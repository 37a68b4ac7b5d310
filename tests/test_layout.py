"""The package's layout is its architecture: imports form no cycle, and each package
imports only the packages below it (docs/architecture.md has the map).

Every import statement counts: at module level, inside functions, and under
``TYPE_CHECKING``. A strawberry ``lazy`` type reference would hide an import in a string,
so none is allowed either.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parent.parent / "headgraph"

LAYERS: dict[str, set[str]] = {
    # package (or top-level module) -> what it may import, besides itself
    "version": set(),
    "errors": set(),
    "toy": set(),
    "schema": {"errors"},
    "ingest": {"errors", "version", "schema", "toy"},
    "queries": {"errors", "schema"},
    "graph": {"errors", "schema", "queries"},
    "api": {"errors", "schema", "queries", "graph"},
    "attribution": {"errors", "version", "schema", "queries", "api"},
    "circuits": {"errors", "schema", "queries"},
    "maintenance": {"schema", "attribution"},
    "server": {"api", "attribution"},
    "notebook": {"errors", "schema", "queries", "graph", "attribution", "circuits", "api",
                 "server"},
    "cli": {"errors", "version", "schema", "ingest", "queries", "graph", "api",
            "attribution", "circuits", "maintenance", "server", "notebook", "toy"},
    "": {"version", "notebook", "server"},  # headgraph/__init__.py
}
"""Who may import whom. The core (schema, ingest, queries, graph, api) never imports a
feature (attribution, circuits) or a composition root (server, maintenance, notebook, cli);
the CLI imports everything and nothing imports it."""

READ_SIDE = ("queries", "graph", "api", "server", "notebook", "maintenance")
"""Packages whose modules must not import torch or transformer-lens (a server starts from
the database alone)."""


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every headgraph module ``name`` imports (a package's ``__init__`` counts as itself)."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, *([base] if base else [])])
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                       for a in node.names]
        else:
            continue
        out.update(t for t in targets if t.startswith("headgraph") and t in modules)
    out.discard(name)
    return out


def _graph() -> nx.DiGraph:
    modules = _modules()
    g = nx.DiGraph()
    for name, path in modules.items():
        g.add_node(name)
        for target in _imports(name, path, modules):
            g.add_edge(name, target)
    return g


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_module_imports_itself_back():
    cycles = [sorted(c) for c in nx.strongly_connected_components(_graph()) if len(c) > 1]
    assert cycles == [], f"import cycles: {cycles}"


def test_each_package_imports_only_the_packages_below_it():
    wrong = defaultdict(set)
    for source, target in _graph().edges:
        a, b = _package(source), _package(target)
        if a != b and b not in LAYERS[a]:
            wrong[f"{a or 'headgraph'} -> {b or 'headgraph'}"].add(f"{source} -> {target}")
    assert not wrong, "imports against the layering:\n" + "\n".join(
        f"{k}: {sorted(v)}" for k, v in sorted(wrong.items()))


def test_every_package_is_placed_in_the_layering():
    packages = {_package(m) for m in _modules()}
    assert packages <= set(LAYERS), f"not in LAYERS: {packages - set(LAYERS)}"


def test_no_type_is_referenced_through_a_string_import():
    hidden = [str(p.relative_to(ROOT.parent)) for p in ROOT.rglob("*.py")
              if "strawberry.lazy" in p.read_text()]
    assert hidden == []


def test_the_read_side_never_imports_torch():
    """Each read-side package imported alone into a clean module table, in one
    interpreter (so one package cannot hide behind another that loaded torch first)."""
    code = ("import sys, importlib\n"
            "for package, modules in {groups!r}.items():\n"
            "    for m in [m for m in sys.modules if m.startswith('headgraph') or "
            "m.split('.')[0] in ('torch', 'transformer_lens', 'transformers')]:\n"
            "        del sys.modules[m]\n"
            "    for m in modules:\n"
            "        importlib.import_module(m)\n"
            "    bad = sorted(m for m in ('torch', 'transformer_lens', 'transformers') "
            "if m in sys.modules)\n"
            "    print(package, ','.join(bad))\n")
    groups = {p: [m for m in _modules() if _package(m) == p] for p in READ_SIDE}
    out = subprocess.run([sys.executable, "-c", code.format(groups=groups)],
                         capture_output=True, text=True, check=True).stdout.split("\n")
    loaded = {line.split(" ")[0]: line.partition(" ")[2] for line in out if line}
    assert loaded == dict.fromkeys(READ_SIDE, ""), f"read-side packages that load torch: {loaded}"
