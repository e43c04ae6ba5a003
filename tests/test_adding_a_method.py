"""Adding a method: the README's worked example runs as pasted (under 60 lines) and passes the
contract; every module of ``private_head/_methods/`` registers its method without a hand-kept
list."""

from __future__ import annotations

import importlib
import os
import pkgutil
import re

import pytest

import private_head
from private_head import _methods, _registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _example() -> str:
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    start = text.index("### Adding a method")
    return re.search(r"```python\n(.*?)```", text[start:], re.S).group(1)


@pytest.fixture
def unregister():
    before = set(private_head.available_methods())  # the built-in ones, loaded
    yield
    for name in set(_registry._REGISTRY) - before:
        del _registry._REGISTRY[name]


def test_the_worked_example_runs_and_keeps_the_contract(unregister):
    code = _example()
    assert len(code.splitlines()) < 60
    namespace: dict = {}
    exec(compile(code, "README, Adding a method", "exec"), namespace)  # runs check_method
    assert "centroids" in private_head.available_methods()
    options = [spec["name"] for spec in private_head.describe_options("centroids")]
    assert options == ["prior_rows"]


def test_every_method_module_registers_its_method():
    modules = [m.name for m in pkgutil.iter_modules(_methods.__path__) if m.name[0] != "_"]
    assert len(modules) >= 8
    for name in modules:
        module = importlib.import_module(f"private_head._methods.{name}")
        assert _registry.get_method(name) is module.METHOD, name
    builtin = {
        name
        for name in private_head.available_methods()
        if _registry.get_method(name).run.__module__.startswith("private_head._methods.")
    }
    assert builtin == set(modules)
