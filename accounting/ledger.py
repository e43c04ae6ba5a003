"""A privacy ledger: named releases, tight composition, refusal before overspending.

Adjacency is add-or-remove one example. The ledger composes exactly what it is told: the caller must
make sure that nothing else it publishes depends on the private data (the true dataset size
included: a size that is used or shown must be public or a charged release). Every release is a
dp-accounting event, recorded with ``compose(name, event, **description)``; the accountant is
chosen from the events. While every event is Gaussian (``Gaussian(sigma)``, self-composed or
composed: ``accounting.events.gaussian_event_mu``) the ledger composes exactly in GDP,

    mu = sqrt(sum_i mu_i^2),   epsilon = epsilon_from_mu(mu, delta),

e.g. ``count`` releases of sensitivity C and noise std s are ``SelfComposed(Gaussian(s / C),
count)``, ``mu_i = sqrt(count) C / s``. Once an event that is not Gaussian is recorded (e.g.
Poisson-subsampled steps), everything is composed with dp-accounting's PLD accountant
(add-or-remove-one). The Gaussian releases then enter as one GaussianDpEvent(1 / mu_gauss): by the
GDP composition above this is the same mechanism as composing them one by one, with a single
discretisation. Equal events are merged into one self-composition. Each record recomputes the PLD
(a fraction of a second for a Poisson-sampled event at the default discretisation), so record T
steps as one event (``poisson_event(sigma, q, T)``), not T events.

The report lists the releases as data: each one's name, its event (``events.event_to_dict``,
exact), its mu and the caller's description (e.g. the sensitivity and the noise std), so a report
re-accounts to exactly the epsilon it states.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import dp_accounting

from accounting._checks import check_delta, check_epsilon, check_positive_finite
from accounting.events import check_event, event_to_dict, gaussian_event_mu
from accounting.gdp import epsilon_from_mu, mu_from_epsilon
from accounting.poisson import DEFAULT_DISCRETIZATION, pld_accountant

_TOLERANCE = 1e-9
_RESERVED = ("name", "event", "mu")
_SCALARS = (str, int, float, bool, type(None))


class BudgetExceededError(ValueError):
    """A release would spend more privacy than the ledger's (epsilon, delta) budget allows."""


@dataclass(frozen=True)
class Release:
    """One recorded release: its event, the event's GDP mu (None when it is not Gaussian) and
    what the caller said about it (JSON scalars, e.g. the sensitivity and the noise std)."""

    name: str
    event: dp_accounting.DpEvent
    mu: float | None
    description: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The release as JSON-able data (module docstring); infinities as ``"inf"``."""
        described = {
            k: _json_float(v) if isinstance(v, float) else v for k, v in self.description.items()
        }
        return {
            "name": self.name,
            "event": event_to_dict(self.event),
            "mu": _json_float(self.mu),
            **described,
        }


class PrivacyLedger:
    """Records releases against an (epsilon, delta) budget; epsilon may be math.inf (no limit).

    ``compose`` raises BudgetExceededError, and records nothing, when the release would take the
    composed epsilon above the budget (relative tolerance 1e-9).
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
    def compose(self, name: str, event: dp_accounting.DpEvent, **description: Any) -> Release:
        """Charge the release ``name`` of ``event`` (module docstring); ``description`` (JSON
        scalars) goes into the report beside it. A Gaussian noise multiplier of 0 is an infinite
        privacy loss: refused unless the budget is epsilon = inf."""
        for key, value in description.items():
            if key in _RESERVED or not isinstance(value, _SCALARS):
                raise ValueError(
                    f"a release's description is JSON scalars other than {_RESERVED}, got "
                    f"{key}={value!r}"
                )
        return self._record(self._release(name, event, description))

    def epsilon_after_event(self, event: dp_accounting.DpEvent) -> float:
        """Epsilon that recording `event` would bring the ledger to; records nothing.

        For calibrating a non-Gaussian release (e.g. a noise multiplier for Poisson-sampled
        steps) against what is already spent.
        """
        return self._epsilon_with(self._release("preview", event, {}))

    def _release(
        self, name: str, event: dp_accounting.DpEvent, description: Mapping[str, Any]
    ) -> Release:
        check_event(event)
        if not pld_accountant(self.value_discretization_interval).supports(event):
            raise ValueError(
                f"dp-accounting's PLD accountant (add-or-remove-one) cannot account for {event!r}; "
                "express the release with supported events (Gaussian, Poisson-sampled, ...)"
            )
        return Release(_check_name(name), event, gaussian_event_mu(event), dict(description))

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
            "releases": [r.to_dict() for r in self._releases],
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


__all__ = ["BudgetExceededError", "PrivacyLedger", "Release"]
