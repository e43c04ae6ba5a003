"""The registry of training methods, and what a method is.

A ``Method`` is a value with four parts (see docs/architecture.md, "Methods"):

- ``options``: its frozen, keyword-only options dataclass (defaults, validation, help text);
- ``plan(options, public, allowance) -> Plan``: every release it will make, named, with its
  sensitivity, noise std and DpEvent, computed from public information only (``PublicInfo``:
  shapes, the dataset-size convention, the budget, the preprocessing radius) and the
  ``Allowance`` of budget it may spend, before any private statistic is computed;
- ``run(plan, rows, releaser, context) -> (W [D, K], b [K])``: the passes over the rows
  (``Rows.sum``) and the releases (``Releaser.release``, which adds the planned noise);
- ``summary``: one line for the docs.

``fit`` charges the whole plan to the ledger, then runs the method. ``register_method`` adds one
(a name can be taken once); ``available_methods`` lists them; the contract test suite runs over
every registered method.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax

from private_head._budget import Allowance
from private_head._options import Options
from private_head._plan import Plan, Releaser
from private_head._preprocessing import Preprocessing
from private_head._rows import Rows

HeadParams = tuple[jax.Array, jax.Array]


@dataclass(frozen=True)
class PublicInfo:
    """What a plan may depend on: nothing here is a private quantity.

    ``dataset_size`` is the divisor n: a size the caller declared public, or the released noisy
    count (``size_source`` says which); ``feature_norm`` is the radius r every preprocessed row
    is bounded by.
    """

    dim: int
    num_classes: int
    dataset_size: float
    size_source: str
    epsilon: float
    delta: float
    feature_norm: float
    feature_dtype: str


@dataclass(frozen=True)
class Context:
    """What a run needs besides the rows: the public information and the preprocessing."""

    public: PublicInfo
    preprocessing: Preprocessing


@dataclass(frozen=True)
class Method:
    """A registered training method (module docstring). ``private``: False only for the
    non-private ceiling; ``gaussian``: its releases compose in GDP (``select`` needs that);
    ``details(plan)``: entries the privacy report gets after the run (e.g. what was chosen)."""

    name: str
    options: type[Options]
    plan: Callable[[Options, PublicInfo, Allowance], Plan]
    run: Callable[[Plan, Rows, Releaser, Context], HeadParams]
    summary: str
    private: bool = True
    gaussian: bool = True
    details: Callable[[Plan], dict[str, Any]] | None = None  # report entries after the run


_REGISTRY: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    """Make ``method`` available as ``fit(method=method.name)``; a name can be taken only once."""
    if not isinstance(method, Method):
        raise TypeError(f"register_method takes a Method, got {type(method).__name__}")
    if method.name in _REGISTRY and _REGISTRY[method.name] is not method:
        raise ValueError(f"method {method.name!r} is registered twice")
    _REGISTRY[method.name] = method
    return method


def available_methods() -> list[str]:
    """Names of every registered method."""
    return sorted(_REGISTRY)


def get_method(name: str) -> Method:
    """The method registered as ``name``; a clear error lists the known names."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def describe_options(name: str) -> list[dict[str, Any]]:
    """The options of method ``name`` (for the CLI and the README)."""
    return get_method(name).options.describe()


from private_head._methods import (  # noqa: E402  (each module registers its method)
    auto,
    dp_feature_covariance,
    dp_gd,
    dp_least_squares,
    dp_prototypes,
    dp_sgd,
    nonprivate,
    single_step,
)

__all__ = [
    "Context",
    "HeadParams",
    "Method",
    "PublicInfo",
    "auto",
    "available_methods",
    "describe_options",
    "dp_feature_covariance",
    "dp_gd",
    "dp_least_squares",
    "dp_prototypes",
    "dp_sgd",
    "get_method",
    "nonprivate",
    "register_method",
    "single_step",
]
