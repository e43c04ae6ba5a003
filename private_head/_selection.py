"""The selection: train J candidate heads and pick one privately, all planned and charged together
(``private_head.select``, and ``auto`` with ``select="private"``).

Split. A row is a validation row when a keyed hash of its own values and label falls below
``validation_fraction`` (``_rows.Part``): a row's side depends on that row alone, so adding or
removing one example changes exactly one part by that example. No realised part size is used or
reported: every candidate divides by the public ``(1 - validation_fraction) n``, with n the
divisor of ``fit`` (a public size or the noisy count).

Budget, from the allowance mu (what ``fit`` leaves after the count and a private mean), split by
the public ``selection_fraction`` f: the selection ``mu_sel = sqrt(f) mu``, each of the J
candidates ``mu_j = sqrt((1 - f) / J) mu``, so ``mu^2 = sum_j mu_j^2 + mu_sel^2``. Every
candidate's plan is part of the selection's plan: the whole cost is charged before anything runs.

Selection. The score of candidate j is ``c_j``, its number of correct validation predictions:
adding (removing) one validation example raises (lowers) every ``c_j`` by 0 or 1, a monotone
score of sensitivity 1. With ``eps_sel = log(Phi(mu_sel / 2) / Phi(-mu_sel / 2))``:

- ``"noisy_max"``: ``argmax_j c_j + Laplace(1 / eps_sel)``, report-noisy-max, eps_sel-DP for
  monotone sensitivity-1 scores (Dwork & Roth 2014, claim 3.9);
- ``"exponential"``: ``P(j) ∝ exp(eps_sel c_j)`` (``argmax_j eps_sel c_j + Gumbel``), eps_sel-DP
  for monotone sensitivity-1 scores.

Accounting. An eps-DP mechanism is ``mu_eps``-GDP with ``mu_eps = -2 Phi^{-1}(1 / (1 + e^eps))``:
its trade-off curve ``max(0, 1 - e^eps a, e^-eps (1 - a))`` is piecewise linear, meets the convex
Gaussian curve at both ends and at ``a = 1 / (1 + e^eps)``, so lies above it. ``eps_sel`` above is
exactly ``mu_eps = mu_sel``: the selection is recorded as what it is, an ``eps_sel``-DP mechanism
charged as the ``mu_sel``-GDP that dominates it (``PlannedRelease.dominating_gdp``: the event
``Gaussian(1 / mu_sel)``, no noise std), and
the ledger composes everything exactly in GDP. Candidates must be Gaussian (full-batch) methods.

``public_validation=(x, y)`` picks the best candidate on public data (free), trains every
candidate on all the private rows with ``mu_j = mu / sqrt(J)``, and charges no selection.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import log_ndtr, ndtri

from private_head._budget import Allowance
from private_head._method import Candidate, Context, Fitted, Method, PublicInfo
from private_head._options import NoOptions, route
from private_head._plan import Plan, PlannedRelease
from private_head._registry import get_method
from private_head._release import Choose, Releaser
from private_head._rows import Part, Rows
from private_head._settings import Settings
from private_head._statistics import CorrectCounts
from private_head._validation import check_choice, check_fraction

MECHANISMS = ("noisy_max", "exponential")
SELECTION = "selection"
T = TypeVar("T")


def epsilon_dominated_by(mu: float) -> float:
    """The eps whose eps-DP trade-off curve is dominated by mu-GDP with equality at the symmetric
    point: ``log(Phi(mu / 2) / Phi(-mu / 2))``; inverse of ``mu_dominating``."""
    return float(log_ndtr(mu / 2) - log_ndtr(-mu / 2))


def mu_dominating(epsilon: float) -> float:
    """``-2 Phi^{-1}(1 / (1 + e^eps))``: every eps-DP mechanism is this mu-GDP."""
    return float(-2.0 * ndtri(1.0 / (1.0 + math.exp(epsilon))))


def noisy_choice(key: jax.Array, correct: jax.Array, eps_sel: float, mechanism: str) -> jax.Array:
    """The selected index (module docstring)."""
    correct = jnp.asarray(correct, jnp.float32)
    if mechanism == "noisy_max":
        return jnp.argmax(correct + jax.random.laplace(key, correct.shape) / eps_sel)
    return jnp.argmax(eps_sel * correct + jax.random.gumbel(key, correct.shape))


def parse_candidate(spec: Any) -> Candidate:
    """``{"method": name, **its options}`` as a candidate: a private, Gaussian (full-batch)
    method with its typed options."""
    if not isinstance(spec, Mapping) or "method" not in spec:
        raise ValueError(
            f"each candidate must be a dict with a 'method' and its options, got {spec!r}"
        )
    given = dict(spec)
    method = get_method(given.pop("method"))
    if not method.private:
        raise ValueError(
            "a 'nonprivate' candidate would spend an infinite budget; select() takes "
            "private methods only"
        )
    if not method.gaussian:
        raise ValueError(
            f"method {method.name!r} records a non-Gaussian (PLD) event; select() composes "
            "the candidates in GDP and accepts only Gaussian (full-batch) methods"
        )
    return Candidate(method, route(method.name, method.options, given, shared=False).method)


@dataclass(frozen=True)
class SelectionSettings(Settings):
    """Every candidate's plan, the public information they planned with (the divisor
    ``(1 - validation_fraction) n``), and the selection's epsilon and mu (None: public
    validation, no selection release)."""

    plans: tuple[Plan[Settings], ...]
    public: PublicInfo
    epsilon_selection: float | None
    mu_selection: float | None

    def to_dict(self) -> dict[str, object]:
        return {
            "candidates": [p.settings.to_dict() for p in self.plans],
            "epsilon_selection": self.epsilon_selection,
            "mu_selection": self.mu_selection,
        }


@dataclass(frozen=True)
class Chosen:
    """A selection's outcome: the chosen candidate, its index and head, and the selection's
    report."""

    index: int
    candidate: Candidate
    head: Fitted
    report: dict[str, object]


@dataclass(frozen=True)
class Selection:
    """The selection as one composite method (module docstring)."""

    candidates: tuple[Candidate, ...]
    mechanism: str = "noisy_max"
    validation_fraction: float = 0.1
    selection_fraction: float = 0.1
    split_salt: int = 0
    public_validation: tuple[Any, Any] | None = None

    def __post_init__(self) -> None:
        if not self.candidates:
            raise ValueError("candidates must be a non-empty list of dicts")
        check_fraction("validation_fraction", self.validation_fraction)
        check_fraction("selection_fraction", self.selection_fraction)
        check_choice("mechanism", self.mechanism, MECHANISMS)

    @classmethod
    def parse(cls, specs: Sequence[Any], **settings: Any) -> Selection:
        """The selection among ``specs`` (``[{"method": name, **its options}, ...]``)."""
        if not isinstance(specs, (list, tuple)) or not specs:
            raise ValueError("candidates must be a non-empty list of dicts")
        return cls(tuple(parse_candidate(spec) for spec in specs), **settings)

    @property
    def private_validation(self) -> bool:
        return self.public_validation is None

    def prefix(self, j: int) -> str:
        return f"candidate {j} ({self.candidates[j].method.name})/"

    def plan(
        self, options: NoOptions, public: PublicInfo, allowance: Allowance
    ) -> Plan[SelectionSettings]:
        del options
        J = len(self.candidates)
        if self.private_validation:
            parts = allowance.split({SELECTION: self.selection_fraction}, rest="candidates")
            mu_sel, mu_all = parts[SELECTION].mu, parts["candidates"].mu
            size = (1.0 - self.validation_fraction) * public.dataset_size
        else:
            mu_sel, mu_all, size = None, allowance.mu, public.dataset_size
        each = Allowance(mu_all / math.sqrt(J), allowance.epsilon, allowance.delta)
        sub = dataclasses.replace(public, dataset_size=size)
        plans = tuple(c.method.plan(c.options, sub, each) for c in self.candidates)
        releases = [
            r.renamed(self.prefix(j) + r.name) for j, p in enumerate(plans) for r in p.releases
        ]
        eps_sel = None
        if mu_sel is not None:
            eps_sel = epsilon_dominated_by(mu_sel)
            description = (
                f"{self.mechanism} over {J} candidates: {eps_sel:.6g}-DP, charged as the "
                f"{mu_sel:.6g}-GDP that dominates it"
            )
            releases.append(PlannedRelease.dominating_gdp(SELECTION, mu_sel, description))
        return Plan(tuple(releases), SelectionSettings(plans, sub, eps_sel, mu_sel))

    def choose(
        self, plan: Plan[SelectionSettings], rows: Rows, releaser: Releaser, context: Context
    ) -> Chosen:
        """Train every candidate and pick one (module docstring)."""
        settings = plan.settings
        train_rows, val_rows = rows, rows
        if self.private_validation:
            part = dict(salt=self.split_salt, fraction=self.validation_fraction)
            train_rows = rows.with_part(Part(**part, validation=False))
            val_rows = rows.with_part(Part(**part, validation=True))
        sub_context = Context(settings.public, context.preprocessing)
        heads = [
            cand.method.run(sub_plan, train_rows, _Prefixed(releaser, self.prefix(j)), sub_context)
            for j, (cand, sub_plan) in enumerate(zip(self.candidates, settings.plans, strict=True))
        ]
        params = [(h.weights, h.bias) for h in heads]
        if settings.epsilon_selection is not None:
            scores = val_rows.sum(CorrectCounts(len(heads)), params, context.preprocessing)
            eps_sel, mechanism = settings.epsilon_selection, self.mechanism
            index = int(
                releaser.choice(
                    SELECTION, scores, lambda key, s: noisy_choice(key, s, eps_sel, mechanism)
                )
            )
        else:
            x_pub, y_pub = self.public_validation
            accuracy = [_public_accuracy(h, x_pub, y_pub, context) for h in heads]
            index = int(np.argmax(accuracy))
        return Chosen(index, self.candidates[index], heads[index], self.report(settings, index))

    def run(
        self, plan: Plan[SelectionSettings], rows: Rows, releaser: Releaser, context: Context
    ) -> Fitted:
        chosen = self.choose(plan, rows, releaser, context)
        report = {"selection": chosen.report}
        return Fitted(chosen.head.weights, chosen.head.bias, report, chosen.candidate)

    def as_method(self, name: str = "select") -> Method[NoOptions, SelectionSettings]:
        return Method(name, NoOptions, self.plan, self.run, "private selection among candidates")

    def report(self, settings: SelectionSettings, index: int) -> dict[str, object]:
        out: dict[str, object] = {
            "candidates": [c.to_dict() for c in self.candidates],
            "chosen": index,
            "mechanism": self.mechanism if self.private_validation else "argmax on public data",
            "hyperparameters": "selected privately"
            if self.private_validation
            else "selected on public data",
        }
        if settings.epsilon_selection is not None:
            out.update(
                epsilon_selection=settings.epsilon_selection,
                mu_selection=settings.mu_selection,
                validation_fraction=self.validation_fraction,
                split_salt=self.split_salt,
            )
        return out


class _Prefixed:
    """A candidate's view of the selection's releaser (a ``Releaser``): its release names carry
    its prefix."""

    def __init__(self, parent: Releaser, prefix: str):
        self.parent, self.prefix = parent, prefix

    def release(self, name: str, statistic: T) -> T:
        return self.parent.release(self.prefix + name, statistic)

    def choice(self, name: str, scores: jax.Array, choose: Choose) -> jax.Array:
        return self.parent.choice(self.prefix + name, scores, choose)

    def sampling_key(self, name: str, draw: int) -> jax.Array:
        return self.parent.sampling_key(self.prefix + name, draw)


def _public_accuracy(head: Fitted, x: Any, y: Any, context: Context) -> float:
    x = context.preprocessing.apply(np.asarray(x))
    logits = x @ np.asarray(head.weights) + np.asarray(head.bias)
    return float(np.mean(np.argmax(logits, axis=1) == np.asarray(y)))


__all__ = [
    "MECHANISMS",
    "Chosen",
    "Selection",
    "SelectionSettings",
    "epsilon_dominated_by",
    "mu_dominating",
    "noisy_choice",
    "parse_candidate",
]
