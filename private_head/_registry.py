"""The registry of training methods (docs/architecture.md, "Methods").

``register_method`` adds a method (a name can be taken once); ``available_methods`` lists them;
``get_method`` finds one. The built-in methods are the modules of ``private_head._methods``: each
registers its method when imported, and the registry imports every one of them (but the
underscore modules, which hold what they share) on first use, so adding a built-in method means
adding one module. A method registered later gets the contract checks by registering
(``private_head.testing.check_method``).
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from private_head._method import Method

_REGISTRY: dict[str, Method[Any, Any]] = {}
_LOADED = False


def _load_builtin() -> None:
    """Import every method module of ``private_head._methods`` once (module docstring)."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    from private_head import _methods

    for info in pkgutil.iter_modules(_methods.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{_methods.__name__}.{info.name}")


def register_method(method: Method[Any, Any]) -> Method[Any, Any]:
    """Make ``method`` available as ``fit(method=method.name)``; a name can be taken only once."""
    if not isinstance(method, Method):
        raise TypeError(f"register_method takes a Method, got {type(method).__name__}")
    _load_builtin()
    if method.name in _REGISTRY and _REGISTRY[method.name] is not method:
        raise ValueError(f"method {method.name!r} is registered twice")
    _REGISTRY[method.name] = method
    return method


def available_methods() -> list[str]:
    """Names of every registered method."""
    _load_builtin()
    return sorted(_REGISTRY)


def get_method(name: str) -> Method[Any, Any]:
    """The method registered as ``name``; a clear error lists the known names."""
    _load_builtin()
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def describe_options(name: str) -> list[dict[str, Any]]:
    """The options of method ``name`` (for the CLI and the README)."""
    return get_method(name).options.describe()


__all__ = ["available_methods", "describe_options", "get_method", "register_method"]
