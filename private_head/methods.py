"""The registry of training methods.

A method is ``train(data: TrainData, config: FitConfig, ledger: PrivacyLedger, key: jax.Array)
-> (W [D, K], b [K])``. It calibrates its own noise from ``(config.epsilon, config.delta)`` or from
``ledger.remaining_mu`` (when a private mean was charged first), records every release in the ledger
BEFORE making it, and returns the head parameters. Register one with ``@register_method("name")``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

Method = Callable[..., Any]

# Modules that register methods when imported; a module absent from this checkout is skipped.
METHOD_MODULES = (
    "private_head.single_step",
    "private_head.full_batch",
    "private_head.dp_sgd",
    "private_head.nonprivate",
    "private_head.least_squares",
    "private_head.covariance",
    "private_head.prototypes",
    "private_head.selection",
)

_REGISTRY: dict[str, Method] = {}
_loaded = False


def register_method(name: str) -> Callable[[Method], Method]:
    """Decorator: make ``fn`` available as ``fit(method=name)``; a name can be taken only once."""

    def decorate(fn: Method) -> Method:
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            raise ValueError(f"method {name!r} is registered twice ({_REGISTRY[name]} and {fn})")
        _REGISTRY[name] = fn
        return fn

    return decorate


def _load_method_modules() -> None:
    global _loaded
    if _loaded:
        return
    for module in METHOD_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:  # the module exists but one of its imports is missing
                raise
    _loaded = True


def read_options(config: Any, defaults: dict[str, Any], method: str) -> dict[str, Any]:
    """``defaults`` updated with ``config.method_options``; an option the method does not know is an
    error (a typo such as ``lerning_rate=0.1`` must not train silently with the default)."""
    given = dict(config.method_options)
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        accepts = f"it accepts {sorted(defaults)}" if defaults else "it takes no method options"
        raise ValueError(f"method {method!r} does not understand option(s) {unknown}; {accepts}")
    return {**defaults, **given}


def available_methods() -> list[str]:
    """Names of every registered method."""
    _load_method_modules()
    return sorted(_REGISTRY)


def get_method(name: str) -> Method:
    """The training function registered as ``name``; a clear error lists the known names."""
    _load_method_modules()
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]
