"""No import cycle inside ``libchat/``: imports go downward (doors -> core ->
interfaces <- runtimes/storage), so every module can be read, tested and
replaced from the bottom up.

The graph is read from the source with ``ast``: every ``import`` and ``from
... import`` naming a libchat module, at any depth (function-level imports
included: a cycle hidden in a function is still a cycle), relative imports
resolved. ``if TYPE_CHECKING:`` imports count too: a module that needs another's
types for its own signatures depends on it as much as one that calls it (the
runtime circle of issue 8 hides behind TYPE_CHECKING).
"""

from __future__ import annotations

import ast
from pathlib import Path


from .launcher import ROOT

PACKAGE = ROOT / "libchat"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The libchat modules ``name`` imports (a package import counts as its
    ``__init__``; ``from pkg import mod`` as ``pkg.mod`` when that is a module)."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[:len(base) - node.level + (1 if is_package else 0)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            targets = [f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in known
                       else origin for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # a name inside a module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan),
    each as a shortest cycle from its first module; ``members`` says who is in it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
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
                found.append(_cycle_through(sorted(component), edges))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def _cycle_through(component: list[str], edges: dict[str, set[str]]) -> list[str]:
    """A shortest path from the component's first module back to itself."""
    members = set(component)
    start = component[0]
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(edges[v] & members):
                if w == start:
                    return paths[v] + [start]
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    nxt.append(w)
        frontier = nxt
    return component  # pragma: no cover - a component always has a cycle


# -- the checker checks ----------------------------------------------------------


def test_the_checker_finds_a_cycle_and_names_it() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(edges) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_function_level_relative_and_type_checking_imports_are_edges(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from .sub import thing\n    import libchat.other\n"
                      "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                      "    from libchat import hidden\n")
    known = {"libchat", "libchat.pkg.sub", "libchat.other", "libchat.hidden", "libchat.pkg.m"}
    assert imports_of("libchat.pkg.m", source, known) == {"libchat.pkg.sub", "libchat.other",
                                                          "libchat.hidden"}


def test_the_graph_sees_libchat() -> None:
    edges = graph()
    assert "libchat.tap" in edges and edges["libchat.tap"], "tap imports nothing?"


# -- the real thing -------------------------------------------------------------------

RUNTIME_CYCLE = {"libchat.runtimes.node.runner", "libchat.runtimes.pool",
                 "libchat.runtimes.node.program_io"}


def members(edges: dict[str, set[str]], cycle: list[str]) -> list[str]:
    """Every module in the same circle as ``cycle`` (its strongly connected component)."""
    def reach(start: str, forward: bool) -> set[str]:
        seen, todo = {start}, [start]
        while todo:
            v = todo.pop()
            nxt = edges[v] if forward else {u for u, ws in edges.items() if v in ws}
            for w in nxt - seen:
                seen.add(w)
                todo.append(w)
        return seen
    return sorted(reach(cycle[0], True) & reach(cycle[0], False))


def _report(found: list[list[str]]) -> str:
    edges = graph()
    return "import cycles in libchat/:\n" + "\n".join(
        f"{' -> '.join(c)}  (the circle: {', '.join(members(edges, c))})" for c in found)


def test_no_import_cycle_in_libchat_besides_the_runtime_one() -> None:
    """Every cycle but the known one of the node runtime (see the next test)."""
    edges = graph()
    other = [c for c in cycles(edges) if not set(members(edges, c)) <= RUNTIME_CYCLE]
    assert not other, _report(other)


def test_no_import_cycle_in_libchat() -> None:
    found = cycles(graph())
    assert not found, _report(found)
