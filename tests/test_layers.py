"""The package's folders are its layers: imports point downward only (docs/design.md).

Every module's imports are read from its source (module level, inside
functions and under ``TYPE_CHECKING`` alike) and each edge is held against
the rules below.  ``import_module`` with a literal target is an edge too, and
a hidden one unless it is one of the two declared tables (the public
``_EXPORTS`` and the CLI's ``COMMANDS``), whose targets are checked like any
import.  The checker is run on a small fake package with one violation of
each kind as its negative control.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import forkwell

SRC = Path(forkwell.__file__).parent

# The layers, bottom up.  A feature is one room: it may use the core and the
# exceptions, and its own modules, never another feature.
FEATURES = ("_run", "_timeout", "_init", "_daemon", "_servers", "_supervisor")
# The two tables that name modules as strings, and where they live.
TABLES = {"forkwell": "_EXPORTS", "forkwell._cli": "COMMANDS"}
# What ``forkwell ps`` imports must stay lean: not the engine, not asyncio.
LEAN_ROOT = "forkwell._cli._ctl"
NOT_LEAN = ("forkwell._supervisor._engine", "forkwell._supervisor._config", "asyncio", "tomllib")


def layer(module: str) -> str:
    """``core``, ``exceptions``, ``cli``, ``top`` or ``feature:NAME`` for a forkwell module."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "__main__":
        return "top"
    head = parts[1]
    if head == "_core":
        return "core"
    if head == "_exceptions":
        return "exceptions"
    if head == "_cli":
        return "cli"
    if head in FEATURES:
        return f"feature:{head}"
    return f"unknown:{head}"


class Module:
    def __init__(self, name: str, path: Path, is_package: bool) -> None:
        self.name = name
        self.path = path
        self.is_package = is_package
        self.tree = ast.parse(path.read_text(), str(path))


def modules(root: Path) -> dict[str, Module]:
    out = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        parts = list(rel.parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        out[".".join(parts)] = Module(".".join(parts), path, is_package)
    return out


class Edge:
    def __init__(self, source: str, target: str, line: int, names: tuple[str, ...], top: bool):
        self.source = source
        self.target = target
        self.line = line
        self.names = names  # what ``from target import ...`` takes, when it is not a module
        self.top = top  # at module level, outside TYPE_CHECKING: runs at import time

    def __str__(self) -> str:
        return f"{self.source}:{self.line} imports {self.target}"


def _base(mod: Module, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    parts = mod.name.split(".") if mod.is_package else mod.name.split(".")[:-1]
    if node.level > 1:
        parts = parts[: len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def _walk(tree: ast.AST) -> Iterator[tuple[ast.AST, bool]]:
    """Every node, with whether it runs at import time (module level, not TYPE_CHECKING)."""

    def visit(node: ast.AST, top: bool) -> Iterator[tuple[ast.AST, bool]]:
        for child in ast.iter_child_nodes(node):
            yield child, top
            inner = top
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                inner = False
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                inner = False
            yield from visit(child, inner)

    yield from visit(tree, True)


def edges(mods: dict[str, Module], problems: list[str]) -> list[Edge]:
    """Every import edge from a forkwell module to a forkwell module (or to asyncio/tomllib)."""
    out: list[Edge] = []
    for mod in mods.values():
        for node, top in _walk(mod.tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    out.append(Edge(mod.name, alias.name, node.lineno, (), top))
            elif isinstance(node, ast.ImportFrom):
                base = _base(mod, node)
                names = []
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    if sub in mods:
                        out.append(Edge(mod.name, sub, node.lineno, (), top))
                    else:
                        names.append(alias.name)
                if names:
                    out.append(Edge(mod.name, base, node.lineno, tuple(names), top))
            elif isinstance(node, ast.Call) and _is_import_module(node):
                out.extend(_dynamic(mod, node, problems))
    return [e for e in out if e.target.split(".")[0] in ("forkwell", "asyncio", "tomllib")]


def _is_import_module(node: ast.Call) -> bool:
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    return name == "import_module"


def _dynamic(mod: Module, node: ast.Call, problems: list[str]) -> list[Edge]:
    """``import_module``: the declared tables become edges; any other literal is hidden."""
    arg = node.args[0] if node.args else None
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        problems.append(f"{mod.name}:{node.lineno} hides an import of {arg.value!r} in import_module")
        return []
    table = TABLES.get(mod.name)
    if table is None:
        return []  # a user's module (MODULE:HANDLER): not a package edge
    found = []
    for stmt in mod.tree.body:
        target = stmt.target if isinstance(stmt, ast.AnnAssign) else None
        if isinstance(stmt, ast.Assign):
            target = stmt.targets[0]
        if isinstance(target, ast.Name) and target.id == table:
            value = ast.literal_eval(stmt.value)  # type: ignore[union-attr, arg-type]
            for item in value.values():
                rel = item[0] if isinstance(item, tuple) else item
                found.append(Edge(mod.name, _absolute(mod, rel), stmt.lineno, (), False))
    if not found:
        problems.append(f"{mod.name}:{node.lineno} calls import_module without its table {table}")
    return found


def _absolute(mod: Module, rel: str) -> str:
    if not rel.startswith("."):
        return rel
    level = len(rel) - len(rel.lstrip("."))
    parts = mod.name.split(".") if mod.is_package else mod.name.split(".")[:-1]
    if level > 1:
        parts = parts[: len(parts) - (level - 1)]
    return ".".join([*parts, rel.lstrip(".")])


def rule_violations(edge: Edge) -> list[str]:  # noqa: PLR0911 (a return per rule)
    if not edge.target.startswith("forkwell"):
        return []
    src, dst = layer(edge.source), layer(edge.target)
    for who in (src, dst):
        if who.startswith("unknown:"):
            return [f"{edge}: {who[8:]} is in no layer (add its folder to FEATURES?)"]
    if dst == "top" and edge.target == "forkwell":
        if edge.source == "forkwell" or set(edge.names) <= {"__version__"}:
            return []
        return [f"{edge} (names {edge.names}): only __version__ may come from the package itself"]
    if src == "core" and dst not in ("core", "exceptions"):
        return [f"{edge}: the core imports only the core and the exceptions"]
    if src == "exceptions" and edge.target != "forkwell._core._status":
        return [f"{edge}: the exceptions import nothing but the exit describer"]
    if src.startswith("feature:") and dst not in ("core", "exceptions", src):
        return [f"{edge}: a feature imports the core and the exceptions, not {dst}"]
    if dst == "cli" and src not in ("cli", "top"):
        return [f"{edge}: nothing below the CLI imports it"]
    if dst == "cli" and edge.source == "forkwell":
        return [f"{edge}: the public surface does not import the CLI"]
    return []


def cycles(mods: dict[str, Module], all_edges: list[Edge]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {name: set() for name in mods}
    for e in all_edges:
        if e.target in graph and e.target != e.source:
            graph[e.source].add(e.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            connect(v)
    return found


def lean_leaks(mods: dict[str, Module], all_edges: list[Edge]) -> list[str]:
    """What ``forkwell ps`` would import at start-up that it must not."""
    if LEAN_ROOT not in mods:
        return []
    at_import: dict[str, set[str]] = {}
    for e in all_edges:
        if e.top:
            at_import.setdefault(e.source, set()).add(e.target)
    seen = {LEAN_ROOT}
    todo = [LEAN_ROOT]
    while todo:
        for target in at_import.get(todo.pop(), ()):
            # Importing a.b.c runs a/__init__ and a/b/__init__ first.
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                name = ".".join(parts[:i])
                if name not in seen:
                    seen.add(name)
                    todo.append(name)
    return [f"{LEAN_ROOT} imports {bad} at start-up" for bad in NOT_LEAN if bad in seen]


def check(root: Path) -> list[str]:
    mods = modules(root)
    problems: list[str] = []
    all_edges = edges(mods, problems)
    for e in all_edges:
        problems.extend(rule_violations(e))
    for component in cycles(mods, all_edges):
        problems.append(f"import cycle: {' <-> '.join(component)}")
    problems.extend(lean_leaks(mods, all_edges))
    return problems


def test_the_package_keeps_its_layers() -> None:
    assert check(SRC) == []


def test_every_folder_is_a_known_layer() -> None:
    for name in modules(SRC):
        assert not layer(name).startswith("unknown"), name


FAKE = {
    "__init__.py": '_EXPORTS = {"X": "._core._a"}\n'
    "def __getattr__(n):\n    from importlib import import_module\n"
    "    return import_module(_EXPORTS[n], __name__)\n",
    "_exceptions.py": "from ._run import r\n",  # exceptions importing a feature
    "_core/__init__.py": "",
    "_core/_a.py": "from .._daemon import _d\n",  # the core importing a feature
    "_core/_status.py": "",
    "_run.py": "from ._exceptions import E\nfrom ._servers import _s\n",  # feature -> feature
    "_daemon/__init__.py": "",
    "_daemon/_d.py": "def f():\n    from .._cli import main\n",  # a feature importing the CLI
    "_servers/__init__.py": "",
    "_servers/_s.py": "from .. import X\n",  # a name from the package itself
    "_supervisor/__init__.py": "",
    "_supervisor/_engine.py": "import asyncio\n",
    "_supervisor/_p.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
    "    from ._q import Q\n",
    "_supervisor/_q.py": "from ._p import P\n",  # a cycle through a type-only import
    "_supervisor/_h.py": "import importlib\nm = importlib.import_module('forkwell._run')\n",
    "_cli/__init__.py": "",
    "_cli/_ctl.py": "from .._supervisor import _engine\n",  # ps would load the engine
    "_extra/__init__.py": "",
    "_extra/_x.py": "from .._core import _a\n",
}


def test_negative_control_every_kind_of_violation_is_caught(tmp_path: Path) -> None:
    root = tmp_path / "forkwell"
    for rel, text in FAKE.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    problems = "\n".join(check(root))
    expected = [
        "forkwell._exceptions:1 imports forkwell._run: the exceptions import nothing",
        "forkwell._core._a:1 imports forkwell._daemon._d: the core imports only",
        "forkwell._run:2 imports forkwell._servers._s: a feature imports the core",
        "forkwell._daemon._d:2 imports forkwell._cli: a feature imports the core",
        "forkwell._servers._s:1 imports forkwell (names ('X',))",
        "import cycle: forkwell._supervisor._p <-> forkwell._supervisor._q",
        "forkwell._supervisor._h:2 hides an import of 'forkwell._run'",
        "forkwell._cli._ctl imports forkwell._supervisor._engine at start-up",
        "forkwell._cli._ctl imports asyncio at start-up",
        "forkwell._extra._x:1 imports forkwell._core._a: _extra is in no layer",
    ]
    for line in expected:
        assert line in problems, f"not caught: {line}\n--- got:\n{problems}"


@pytest.mark.parametrize("name", sorted(modules(SRC)))
def test_each_module_names_its_layer_in_the_design_page(name: str) -> None:
    """docs/design.md draws the tree: every module is in it, so a newcomer finds its room."""
    design = (SRC.parent.parent / "docs" / "design.md").read_text()
    leaf = name.rsplit(".", 1)[-1]
    assert leaf in design, f"{name} is not in docs/design.md"
