"""The package's layers, read from its source: no circle of imports, and no chapter module that
imports another (chapters share only :mod:`autograder.checks`, ``spec``, ``compare`` and
``autograder.data``). Imports inside functions count as much as those at the top."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "autograder"


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``path`` imports, anywhere in it."""
    name = _module(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return {m for m in found if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {_module(p) for p in paths}
    return {_module(p): _imports(p, modules) for p in paths}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of imports, or None (depth-first search for an edge back to the path)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_graph_is_read_from_the_source():
    graph = _graph()
    assert "autograder.checks" in graph["autograder.chapters.ch01_tokens"]
    assert "autograder.course" in graph["autograder.cli"] and "autograder.course" in graph["autograder.parallel"]


def test_no_circle_of_imports():
    assert _cycle(_graph()) is None, " → ".join(_cycle(_graph()))


def test_no_chapter_module_imports_another():
    chapters = {m: deps for m, deps in _graph().items() if m.startswith("autograder.chapters.ch")}
    crossing = {m: sorted(d for d in deps if d.startswith("autograder.chapters.")) for m, deps in chapters.items()}
    assert chapters and not any(crossing.values()), {m: d for m, d in crossing.items() if d}


def test_the_cycle_finder_finds_a_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
