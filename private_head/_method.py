"""What a training method is (docs/architecture.md, "Methods").

A ``Method[O, S]`` (options type O, settings type S) is a value with

- ``options``: its frozen, keyword-only options type ``O`` (defaults, validation, help text);
- ``plan(options, public, allowance) -> Plan[S]``: every release it will make, each with its
  sensitivity, noise std and dp-accounting event, and the typed settings ``S`` its run needs,
  computed from public information only (``PublicInfo``) and the ``Allowance`` of budget it may
  spend, before any private statistic is computed;
- ``run(plan, rows, releaser, context) -> Fitted``: the passes over the rows (``Rows.sum``) and
  the releases (``Releaser.release``, which adds the planned noise), and the head they give;
- ``summary``: one line for the docs; ``private``: False only for the non-private ceiling;
  ``gaussian``: its releases compose in GDP (``select`` and the dataset's budget need that);
- ``spread_fraction(options)``: the share of mu^2 the method wants ``fit`` to spend, before it
  plans, on the released feature spread (``PublicInfo.feature_spread``); 0 (the default, and
  every method but ``auto``) plans without it.

``fit`` charges the whole plan to the ledger, then runs the method.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import jax
import numpy as np

from private_head._budget import Allowance
from private_head._options import Options
from private_head._plan import Plan
from private_head._preprocessing import Preprocessing
from private_head._release import Releaser
from private_head._rows import Rows
from private_head._settings import Settings

OptionsT = TypeVar("OptionsT", bound=Options)
SettingsT = TypeVar("SettingsT", bound=Settings)


@dataclass(frozen=True)
class PublicInfo:
    """What a plan may depend on: nothing here is a private quantity.

    ``dataset_size`` is the divisor n (a size the caller declared public, or the released noisy
    count); ``feature_norm`` is the radius r every preprocessed row is bounded by;
    ``feature_spread`` the released spread of the preprocessed rows' second moment,
    ``sqrt(D) (||X^T X||_F + noise) / (n r^2)`` (about 1 for isotropic features, up to sqrt(D)
    for rank one; ``_train``), or None when the method did not ask for it.
    """

    dim: int
    num_classes: int
    dataset_size: float
    feature_norm: float
    feature_spread: float | None = None


@dataclass(frozen=True)
class Context:
    """What a run needs besides its plan and the rows: the public information and the
    preprocessing that every pass applies."""

    public: PublicInfo
    preprocessing: Preprocessing


@dataclass(frozen=True)
class Method(Generic[OptionsT, SettingsT]):
    """A training method (module docstring)."""

    name: str
    options: type[OptionsT]
    plan: Callable[[OptionsT, PublicInfo, Allowance], Plan[SettingsT]]
    run: Callable[[Plan[SettingsT], Rows, Releaser, Context], Fitted]
    summary: str
    private: bool = True
    gaussian: bool = True
    spread_fraction: Callable[[OptionsT], float] = field(default=lambda options: 0.0)  # none


@dataclass(frozen=True)
class Candidate:
    """A method with its typed options (one of ``select``'s candidates, or ``auto``'s choice)."""

    method: Method[Any, Any]
    options: Options

    def to_dict(self) -> dict[str, object]:
        return {"method": self.method.name, **self.options.to_dict()}


@dataclass(frozen=True)
class Fitted:
    """What a run returns: the head ``(W [D, K], b [K])``, the entries it adds to the privacy
    report (e.g. what ``auto`` chose and why), and, for a selection, the candidate whose head it
    is."""

    weights: jax.Array | np.ndarray
    bias: jax.Array | np.ndarray
    report: Mapping[str, object] = field(default_factory=dict)
    chosen: Candidate | None = None


__all__ = ["Candidate", "Context", "Fitted", "Method", "PublicInfo"]
