"""``select``: train J candidate heads and pick one privately, all planned and charged together.

Split. A row is a validation row when a keyed hash of its own values and label falls below
``validation_fraction`` (``rows.Part``): a row's side depends on that row alone, so adding or
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
charged as the ``mu_sel``-GDP that dominates it (a ``dominating_gdp`` release, no noise std), and
the ledger composes everything exactly in GDP. Candidates must be Gaussian (full-batch) methods.

``public_validation=(x, y)`` picks the best candidate on public data (free), trains every
candidate on all the private rows with ``mu_j = mu / sqrt(J)``, and charges no selection.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import log_ndtr, ndtri

from private_head._api import check_budget, make_ledger, operator_log, privacy_report, train
from private_head._budget import Allowance, check_fraction
from private_head._head import PrivateHead
from private_head._keys import noise_key
from private_head._methods import Context, Method, PublicInfo, get_method
from private_head._options import Options, Performance, route
from private_head._plan import DOMINATING_GDP, Plan, PlannedRelease, Releaser
from private_head._rows import Part, Rows, open_rows
from private_head._spending import budget_target, dataset_spending
from private_head._statistics import CorrectCounts

MECHANISMS = ("noisy_max", "exponential")
SELECTION = "selection"


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


@dataclass(frozen=True)
class Candidate:
    """One candidate: a registered Gaussian method and its typed options."""

    method: Method
    options: Options

    @classmethod
    def parse(cls, spec: Any) -> Candidate:
        if not isinstance(spec, dict) or "method" not in spec:
            raise ValueError(
                f"each candidate must be a dict with a 'method' and its options, got {spec!r}"
            )
        spec = dict(spec)
        method = get_method(spec.pop("method"))
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
        options, *_ = route(method.name, method.options, spec, shared=False)
        return cls(method, options)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method.name, **self.options.to_dict()}


@dataclass(frozen=True)
class Selection:
    """The selection as one composite method (module docstring)."""

    candidates: tuple[Candidate, ...]
    mechanism: str = "noisy_max"
    validation_fraction: float = 0.1
    selection_fraction: float = 0.1
    split_salt: int = 0
    public_validation: Any = None
    outcome: list[int] = field(default_factory=list, compare=False)

    def __post_init__(self) -> None:
        if not self.candidates:
            raise ValueError("candidates must be a non-empty list of dicts")
        check_fraction("validation_fraction", self.validation_fraction)
        check_fraction("selection_fraction", self.selection_fraction)
        if self.mechanism not in MECHANISMS:
            raise ValueError(f"mechanism must be one of {MECHANISMS}, got {self.mechanism!r}")

    @property
    def private_validation(self) -> bool:
        return self.public_validation is None

    def prefix(self, j: int) -> str:
        return f"candidate {j} ({self.candidates[j].method.name})/"

    def plan(self, options: Options, public: PublicInfo, allowance: Allowance) -> Plan:
        del options
        J = len(self.candidates)
        if self.private_validation:
            parts = allowance.split({SELECTION: self.selection_fraction}, rest="candidates")
            mu_sel, mu_all = parts[SELECTION].mu, parts["candidates"].mu
            size = (1.0 - self.validation_fraction) * public.dataset_size
        else:
            mu_sel, mu_all, size = 0.0, allowance.mu, public.dataset_size
        each = Allowance(mu_all / math.sqrt(J), allowance.epsilon, allowance.delta)
        sub = PublicInfo(**{**public.__dict__, "dataset_size": size})
        plans, releases = [], []
        for j, cand in enumerate(self.candidates):
            plan = cand.method.plan(cand.options, sub, each)
            plans.append(plan)
            releases += [_renamed(r, self.prefix(j) + r.name) for r in plan.releases]
        notes = {"plans": plans, "public": sub}
        if self.private_validation:
            eps_sel = epsilon_dominated_by(mu_sel)
            releases.append(
                PlannedRelease(
                    SELECTION,
                    None,
                    None,
                    kind=DOMINATING_GDP,
                    mu=mu_sel,
                    description=f"{self.mechanism} over {J} candidates: {eps_sel:.6g}-DP, charged "
                    f"as the {mu_sel:.6g}-GDP that dominates it",
                )
            )
            notes.update(epsilon_selection=eps_sel, mu_selection=mu_sel)
        return Plan(tuple(releases), None, notes)

    def run(self, plan: Plan, rows: Rows, releaser: Releaser, context: Context):
        train_rows, val_rows = rows, None
        if self.private_validation:
            part = dict(salt=self.split_salt, fraction=self.validation_fraction)
            train_rows = rows.with_part(Part(**part, validation=False))
            val_rows = rows.with_part(Part(**part, validation=True))
        sub_context = Context(plan.notes["public"], context.preprocessing)
        heads = []
        for j, (cand, sub_plan) in enumerate(
            zip(self.candidates, plan.notes["plans"], strict=True)
        ):
            sub = _PrefixedReleaser(releaser, self.prefix(j))
            heads.append(cand.method.run(sub_plan, train_rows, sub, sub_context))
        if self.private_validation:
            scores = val_rows.sum(CorrectCounts(len(heads)), heads, context.preprocessing)
            eps_sel = plan.notes["epsilon_selection"]
            chosen = releaser.choice(
                SELECTION, scores, lambda key, s: noisy_choice(key, s, eps_sel, self.mechanism)
            )
        else:
            x_pub, y_pub = self.public_validation
            accuracy = [_public_accuracy(h, x_pub, y_pub, context) for h in heads]
            chosen = int(np.argmax(accuracy))
        self.outcome.append(int(chosen))
        return heads[int(chosen)]

    def as_method(self, name: str = "select") -> Method:
        return Method(
            name,
            _NoOptions,
            self.plan,
            self.run,
            "private selection among candidates",
            details=lambda plan: {"selection": self.report(plan)},
        )

    def report(self, plan: Plan) -> dict[str, Any]:
        out = {
            "candidates": [c.to_dict() for c in self.candidates],
            "chosen": self.outcome[-1],
            "mechanism": self.mechanism if self.private_validation else "argmax on public data",
            "hyperparameters": "selected privately"
            if self.private_validation
            else "selected on public data",
        }
        if self.private_validation:
            out.update(
                epsilon_selection=plan.notes["epsilon_selection"],
                mu_selection=plan.notes["mu_selection"],
                validation_fraction=self.validation_fraction,
                split_salt=self.split_salt,
            )
        return out


@dataclass(frozen=True, kw_only=True)
class _NoOptions(Options):
    """The selection's options are its constructor's."""


def _renamed(release: PlannedRelease, name: str) -> PlannedRelease:
    return PlannedRelease(**{**release.__dict__, "name": name})


class _PrefixedReleaser:
    """A candidate's view of the selection's releaser: its release names carry its prefix."""

    def __init__(self, parent: Releaser, prefix: str):
        self.parent, self.prefix = parent, prefix

    def release(self, name: str, statistic: Any) -> Any:
        return self.parent.release(self.prefix + name, statistic)

    def choice(self, name: str, scores: Any, choose: Any) -> Any:
        return self.parent.choice(self.prefix + name, scores, choose)

    def sampling_key(self, name: str, draw: int) -> jax.Array:
        return self.parent.sampling_key(self.prefix + name, draw)


def _public_accuracy(head, x, y, context: Context) -> float:
    W, b = head
    logits = context.preprocessing.apply(np.asarray(x)) @ np.asarray(W) + np.asarray(b)
    return float(np.mean(np.argmax(logits, axis=1) == np.asarray(y)))


def select(
    features: Any,
    labels: Any = None,
    *,
    num_classes: int,
    epsilon: float,
    delta: float,
    candidates: list[dict[str, Any]],
    validation_fraction: float = 0.1,
    mechanism: str = "noisy_max",
    selection_fraction: float = 0.1,
    seed: int | None = None,
    split_salt: int = 0,
    public_mean: Any = None,
    public_validation: Any = None,
    split: str = "train",
    total_epsilon: float | None = None,
    budget_file: Any = None,
    **options: Any,
) -> PrivateHead:
    """Train every candidate (``{"method": name, **its options}``) and return the one chosen
    privately on a validation part of the rows (module docstring); ``.privacy`` holds the whole
    cost: the count, every candidate's releases and the selection, in one ledger. ``options`` are
    the shared ones (preprocessing, dataset size, performance) for all candidates;
    ``total_epsilon`` and ``budget_file`` keep the dataset's budget across runs as in ``fit``."""
    started = time.perf_counter()
    if not isinstance(candidates, (list, tuple)) or not candidates:
        raise ValueError("candidates must be a non-empty list of dicts")
    selection = Selection(
        tuple(Candidate.parse(c) for c in candidates),
        mechanism,
        validation_fraction,
        selection_fraction,
        int(split_salt),
        public_validation,
    )
    method = selection.as_method()
    epsilon, delta = check_budget(method, epsilon, delta)
    _, preprocess, size, performance = route("select", _NoOptions, options)
    ledger = make_ledger(epsilon, delta)
    key, seeded = noise_key(seed)
    path, read_split = budget_target(features, split, budget_file)
    spending = dataset_spending(
        path,
        total_epsilon,
        method=method,
        split=read_split,
        epsilon=epsilon,
        delta=delta,
        seeded=seeded,
    )
    with spending as settle:  # the dataset's budget is charged before a row is read
        rows = open_rows(
            features,
            labels,
            num_classes=num_classes,
            feature_norm=preprocess.feature_norm,
            split=split,
            performance=performance,
        )
        trained = train(
            rows, method, _NoOptions(), preprocess, size, ledger, key, public_mean=public_mean
        )
        settle(ledger)
    privacy = privacy_report(ledger, method, seeded, trained)
    best = selection.candidates[selection.outcome[-1]]
    privacy.update(method=best.method.name)
    settings = {**trained.settings, "method": best.method.name, "options": best.options.to_dict()}
    return PrivateHead(
        trained.weights,
        trained.bias,
        trained.preprocessing,
        privacy,
        settings,
        performance.to_dict(),
        operator_log(rows, started),
    )


__all__ = ["Candidate", "Performance", "Selection", "select"]
