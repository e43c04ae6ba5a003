"""A privacy ledger: named releases, tight composition, refusal before overspending.

Adjacency is add-or-remove one example. The ledger composes exactly what it is told: the caller must
make sure that nothing else it publishes depends on the private data (the true dataset size
included: a size that is used or shown must be public or a charged release). A Gaussian release adds
N(0, noise_std^2) noise to a statistic of L2 sensitivity C and is exactly mu_i-GDP with
mu_i = C / noise_std; `count` identical releases (e.g. T full-batch steps) give sqrt(count) mu_i.
While every release is Gaussian the ledger composes exactly in GDP,

    mu = sqrt(sum_i count_i * (C_i / noise_std_i)^2),   epsilon = epsilon_from_mu(mu, delta).

Once a release that is not Gaussian (any dp-accounting DpEvent, e.g. Poisson-subsampled steps) is
recorded, everything is composed with dp-accounting's PLD accountant (add-or-remove-one). The
Gaussian releases then enter as one GaussianDpEvent(1 / mu_gauss): by the GDP composition above
this is the same mechanism as composing them one by one, with a single discretisation. Equal
events are merged into one self-composition. Each record recomputes the PLD (a fraction of a
second for a Poisson-sampled event at the default discretisation), so record T steps as one
event (`poisson_event(sigma, q, T)`), not T events.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import dp_accounting

from accounting._checks import (
    check_delta,
    check_epsilon,
    check_nonnegative,
    check_positive_finite,
    check_steps,
)
from accounting.gdp import epsilon_from_mu, mu_from_epsilon
from accounting.poisson import DEFAULT_DISCRETIZATION, pld_accountant

_TOLERANCE = 1e-9


class BudgetExceededError(ValueError):
    """A release would spend more privacy than the ledger's (epsilon, delta) budget allows."""


@dataclass(frozen=True)
class Release:
    """One recorded release. `mu` is its GDP parameter (None when the event is not Gaussian)."""

    name: str
    kind: str  # "gaussian", "gdp" (a mechanism known to be mu-GDP) or "event"
    mu: float | None
    sensitivity: float | None = None
    noise_std: float | None = None
    count: int = 1
    event: dp_accounting.DpEvent | None = None
    description: str | None = None

    @property
    def noise_multiplier(self) -> float | None:
        """The noise multiplier sigma: the event's own (exact) when it holds one Gaussian, else
        noise_std / sensitivity."""
        sigma, _ = _gaussian_and_rate(self.event)
        if sigma is not None:
            return sigma
        if self.sensitivity is not None and self.noise_std is not None:
            return self.noise_std / self.sensitivity
        return None

    @property
    def sampling_rate(self) -> float | None:
        """The Poisson sampling rate q of a Poisson-sampled Gaussian event (exact), else None."""
        return _gaussian_and_rate(self.event)[1]


def gaussian_event_mu(event: dp_accounting.DpEvent) -> float | None:
    """GDP mu of an event built only from Gaussian (and no-op) events, else None.

    GaussianDpEvent(s) -> 1/s; SelfComposed(e, n) -> sqrt(n) mu(e); Composed(e_1..e_k) ->
    sqrt(sum mu(e_j)^2); NoOp -> 0.
    """
    if isinstance(event, dp_accounting.NoOpDpEvent):
        return 0.0
    if isinstance(event, dp_accounting.GaussianDpEvent):
        return math.inf if event.noise_multiplier == 0 else 1.0 / event.noise_multiplier
    if isinstance(event, dp_accounting.SelfComposedDpEvent):
        inner = gaussian_event_mu(event.event)
        return None if inner is None else math.sqrt(event.count) * inner
    if isinstance(event, dp_accounting.ComposedDpEvent):
        parts = [gaussian_event_mu(e) for e in event.events]
        if any(p is None for p in parts):
            return None
        return math.sqrt(math.fsum(p * p for p in parts))
    return None


def _gaussian_and_rate(event: dp_accounting.DpEvent | None) -> tuple[float | None, float | None]:
    """``(sigma, q)`` of ``[SelfComposed(] [PoissonSampled(q,] Gaussian(sigma) [)] [)]``: the
    values the event holds, so that a report re-accounts to exactly the recorded epsilon."""
    while isinstance(event, dp_accounting.SelfComposedDpEvent):
        event = event.event
    rate = None
    if isinstance(event, dp_accounting.PoissonSampledDpEvent):
        rate, event = float(event.sampling_probability), event.event
    if isinstance(event, dp_accounting.GaussianDpEvent):
        return float(event.noise_multiplier), rate
    return None, None


class PrivacyLedger:
    """Records releases against an (epsilon, delta) budget; epsilon may be math.inf (no limit).

    `record_gaussian` / `record_event` raise BudgetExceededError, and record nothing, when the
    release would take the composed epsilon above the budget (relative tolerance 1e-9).
    """

    def __init__(
        self,
        epsilon: float,
        delta: float,
        *,
        value_discretization_interval: float = DEFAULT_DISCRETIZATION,
    ) -> None:
        self.epsilon = check_epsilon(epsilon)
        self.delta = check_delta(delta)
        self.value_discretization_interval = check_positive_finite(
            "value_discretization_interval", value_discretization_interval
        )
        self.mu_budget = mu_from_epsilon(self.epsilon, self.delta)
        self._releases: list[Release] = []
        self._epsilon_spent = 0.0

    # ----------------------------------------------------------------------------- recording
    def record_gaussian(
        self, name: str, *, sensitivity: float, noise_std: float, count: int = 1
    ) -> Release:
        """Charge `count` releases of (statistic with L2 sensitivity C) + N(0, noise_std^2).

        Each is (C / noise_std)-GDP. noise_std = 0 is infinite privacy loss: refused unless the
        budget is epsilon = inf.
        """
        sensitivity = check_positive_finite("sensitivity", sensitivity)
        noise_std = check_nonnegative("noise_std", noise_std)
        if math.isinf(noise_std):
            raise ValueError("noise_std must be finite (infinite noise releases nothing)")
        count = check_steps(count, "count")
        mu = math.inf if noise_std == 0 else math.sqrt(count) * sensitivity / noise_std
        release = Release(
            _check_name(name),
            "gaussian",
            mu,
            sensitivity=sensitivity,
            noise_std=noise_std,
            count=count,
        )
        return self._record(release)

    def record_gdp(self, name: str, mu: float, *, description: str) -> Release:
        """Charge a mechanism known to be ``mu``-GDP that adds no Gaussian noise of its own (e.g. an
        epsilon-DP selection charged as the mu-GDP that dominates it); ``description`` says why."""
        mu = check_positive_finite("mu", mu)
        if not isinstance(description, str) or not description:
            raise ValueError("record_gdp needs a description of the mechanism and its GDP bound")
        return self._record(Release(_check_name(name), "gdp", mu, description=description))

    def record_event(
        self,
        name: str,
        event: dp_accounting.DpEvent,
        *,
        description: str | None = None,
        sensitivity: float | None = None,
        noise_std: float | None = None,
        count: int = 1,
    ) -> Release:
        """Charge an arbitrary dp-accounting DpEvent (composed with PLD, add-or-remove-one).

        ``description``, ``sensitivity``, ``noise_std`` and ``count`` only describe the release in
        the report (e.g. the Gaussian noise each of ``count`` Poisson-sampled steps adds).
        """
        release = self._event_release(name, event)
        if sensitivity is not None:
            sensitivity = check_positive_finite("sensitivity", sensitivity)
        if noise_std is not None:
            noise_std = check_nonnegative("noise_std", noise_std)
        release = Release(
            release.name,
            release.kind,
            release.mu,
            sensitivity=sensitivity,
            noise_std=noise_std,
            count=check_steps(count, "count"),
            event=event,
            description=description,
        )
        return self._record(release)

    def epsilon_after_event(self, event: dp_accounting.DpEvent) -> float:
        """Epsilon that recording `event` would bring the ledger to; records nothing.

        For calibrating a non-Gaussian release (e.g. a noise multiplier for Poisson-sampled
        steps) against what is already spent.
        """
        return self._epsilon_with(self._event_release("preview", event))

    def _event_release(self, name: str, event: dp_accounting.DpEvent) -> Release:
        if not isinstance(event, dp_accounting.DpEvent):
            raise ValueError(f"event must be a dp_accounting.DpEvent, got {type(event).__name__}")
        if not pld_accountant(self.value_discretization_interval).supports(event):
            raise ValueError(
                f"dp-accounting's PLD accountant (add-or-remove-one) cannot account for {event!r}; "
                "express the release with supported events (Gaussian, Poisson-sampled, ...)"
            )
        return Release(_check_name(name), "event", gaussian_event_mu(event), event=event)

    def _epsilon_with(self, release: Release) -> float:
        candidate = [*self._releases, release]
        return _compose_epsilon(candidate, self.delta, self.value_discretization_interval)

    def _record(self, release: Release) -> Release:
        spent = self._epsilon_with(release)
        if spent > self.epsilon * (1 + _TOLERANCE):
            before = self.epsilon_spent
            raise BudgetExceededError(
                f"release {release.name!r} would bring epsilon to {spent:.6g} (delta={self.delta}),"
                f" over the budget {self.epsilon:.6g} (already spent {before:.6g}); "
                "add more noise, release less, or raise the budget"
            )
        self._releases.append(release)
        self._epsilon_spent = spent
        return release

    # ----------------------------------------------------------------------------- queries
    @property
    def releases(self) -> tuple[Release, ...]:
        """The recorded releases, oldest first."""
        return tuple(self._releases)

    @property
    def accountant(self) -> str:
        """The composition in use: gdp while every release is Gaussian, else pld."""
        return "gdp" if _all_gaussian(self._releases) else "pld"

    @property
    def mu(self) -> float | None:
        """Composed mu = sqrt(sum mu_i^2) when every release is Gaussian, else None."""
        return _composed_mu(self._releases) if _all_gaussian(self._releases) else None

    @property
    def epsilon_spent(self) -> float:
        """Epsilon of everything recorded so far at the ledger's delta (computed when recorded)."""
        return self._epsilon_spent

    @property
    def remaining_epsilon(self) -> float:
        """max(0, epsilon budget - epsilon spent) (inf for an unlimited budget)."""
        if math.isinf(self.epsilon):
            return math.inf
        return max(0.0, self.epsilon - self.epsilon_spent)

    @property
    def remaining_mu(self) -> float | None:
        """Largest extra mu with sqrt(mu_spent^2 + extra^2) <= mu_from_epsilon(epsilon, delta).

        inf for an unlimited budget; None once a non-Gaussian release makes GDP undefined.
        """
        mu = self.mu
        if mu is None:
            return None
        if math.isinf(self.mu_budget):
            return math.inf
        return math.sqrt(max(0.0, (self.mu_budget - mu) * (self.mu_budget + mu)))

    def report(self) -> dict[str, Any]:
        """A JSON-serialisable summary; infinities are written as the string "inf"."""
        return {
            "epsilon_spent": _json_float(self.epsilon_spent),
            "epsilon_budget": _json_float(self.epsilon),
            "delta": self.delta,
            "mu": _json_float(self.mu),
            "accountant": self.accountant,
            "adjacency": "add_or_remove_one",
            "releases": [_release_dict(r) for r in self._releases],
        }


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"a release needs a non-empty name, got {name!r}")
    return name


def _all_gaussian(releases: list[Release]) -> bool:
    return all(r.mu is not None for r in releases)


def _composed_mu(releases: list[Release]) -> float:
    mus = [r.mu for r in releases if r.mu is not None]
    if any(math.isinf(m) for m in mus):
        return math.inf
    return math.sqrt(math.fsum(m * m for m in mus))


def _compose_epsilon(releases: list[Release], delta: float, interval: float) -> float:
    """GDP epsilon when all releases are Gaussian, else PLD epsilon of everything."""
    mu = _composed_mu(releases)
    if math.isinf(mu):
        return math.inf
    if _all_gaussian(releases):
        return epsilon_from_mu(mu, delta)
    accountant = pld_accountant(interval)
    if mu > 0:
        accountant.compose(dp_accounting.GaussianDpEvent(1.0 / mu))
    for event, count in _grouped_events(releases):
        accountant.compose(event, count)
    return float(accountant.get_epsilon(delta))


def _grouped_events(releases: list[Release]) -> list[tuple[dp_accounting.DpEvent, int]]:
    """Non-Gaussian events with SelfComposed unwrapped and equal events merged into a count.

    Recording T single steps then costs one self-composition of T, not T PLD convolutions.
    """
    groups: list[list] = []
    for r in releases:
        if r.mu is not None:
            continue
        event, count = r.event, 1
        while isinstance(event, dp_accounting.SelfComposedDpEvent):
            event, count = event.event, count * event.count
        for group in groups:
            if group[0] == event:
                group[1] += count
                break
        else:
            groups.append([event, count])
    return [(event, count) for event, count in groups]


def _json_float(x: float | None) -> float | str | None:
    if x is None:
        return None
    return "inf" if math.isinf(x) else float(x)


def _release_dict(r: Release) -> dict[str, Any]:
    return {
        "name": r.name,
        "kind": r.kind,
        "sensitivity": r.sensitivity,
        "noise_std": r.noise_std,
        "noise_multiplier": _json_float(r.noise_multiplier),
        "sampling_rate": r.sampling_rate,
        "count": r.count,
        "mu": _json_float(r.mu),
        "event": None if r.event is None else repr(r.event),
        "description": r.description,
    }
