"""The public face: each package's ``__all__`` is its API and the README's "Python API" section
lists exactly it; every public module declares ``__all__`` of names it has; and the packages'
imports form no circle (a deferred import inside a function counts: it is still a dependency)."""

from __future__ import annotations

import ast
import importlib
import os
import pkgutil
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LISTED = ("private_head", "private_head.testing", "accounting", "feature_extract")


def _readme() -> str:
    with open(os.path.join(ROOT, "README.md")) as f:
        return f.read()


@pytest.mark.parametrize("module", LISTED)
def test_the_readme_lists_exactly_each_public_api(module):
    block = re.search(rf"<!-- api {re.escape(module)} -->\n(.*?)<!-- /api -->", _readme(), re.S)
    assert block, f"the README has no API list for {module}"
    listed = re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", block.group(1))
    assert len(listed) == len(set(listed)), "a name is listed twice"
    assert sorted(listed) == sorted(importlib.import_module(module).__all__)


def _modules(package: str) -> list[str]:
    root = importlib.import_module(package)
    names = [package]
    for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
        names.append(info.name)
    return names


@pytest.mark.parametrize("package", ["private_head", "accounting"])
def test_every_public_module_declares_its_names(package):
    for name in _modules(package):
        parts = name.split(".")
        if any(p.startswith("_") for p in parts[1:]) or parts[-1] == "__main__":
            continue  # internal (or the command line's entry point)
        module = importlib.import_module(name)
        assert hasattr(module, "__all__"), f"{name} has no __all__"
        missing = [n for n in module.__all__ if not hasattr(module, n)]
        assert not missing, f"{name}.__all__ names what it lacks: {missing}"


def _sources(package: str) -> dict[str, str]:
    """``{module name: file}`` of every module of ``package``."""
    out = {}
    for folder, _, files in os.walk(os.path.join(ROOT, package)):
        for file in files:
            if file.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, file), ROOT)[:-3].replace(os.sep, ".")
                out[rel.removesuffix(".__init__")] = os.path.join(folder, file)
    return out


def import_graph(packages) -> dict[str, set[str]]:
    """Edges ``a -> b`` for every ``import`` statement of module a (at any depth) naming module
    b of ``packages`` (``from p import x`` names ``p.x`` when that is a module, else ``p``)."""
    files = {m: f for p in packages for m, f in _sources(p).items()}
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        with open(path) as f:
            tree = ast.parse(f.read())
        package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
        edges = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name in files}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                for alias in node.names:
                    target = f"{base}.{alias.name}"
                    edges.add(target if target in files else base)
        graph[module] = {e for e in edges if e in files and e != module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (its modules in order), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


@pytest.mark.parametrize(
    "packages", [("private_head", "accounting"), ("accounting",), ("feature_extract",)]
)
def test_no_import_circle(packages):
    graph = import_graph(packages)
    assert len(graph) > 5
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
