"""Privacy budgets: the ledger interface fit charges, one rule for splitting a GDP budget, and the
allowance a method plans against.

Budgets are split in GDP: Gaussian releases of parameters ``mu_i`` compose to
``mu = sqrt(sum_i mu_i^2)``, so giving part i the fraction ``f_i`` of ``mu^2`` (``mu_i = sqrt(f_i)
mu``, ``sum_i f_i = 1``) spends exactly ``mu``. ``split_mu`` is the only place that does this.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import dp_accounting

from accounting import BudgetExceededError, Release
from private_head._validation import check_fraction

# Spend a hair less than what is left, so that float rounding never trips the ledger's check.
SPEND_MARGIN = 1.0 - 1e-12
# A remaining mu below this fraction of the budget counts as spent (it could buy only pure noise).
NEGLIGIBLE = 1e-4


class Ledger(Protocol):
    """What ``fit`` needs of a privacy ledger (``accounting.PrivacyLedger`` is one)."""

    epsilon: float
    delta: float
    mu_budget: float
    value_discretization_interval: float

    @property
    def remaining_mu(self) -> float | None: ...

    @property
    def releases(self) -> tuple[Release, ...]: ...

    @property
    def epsilon_spent(self) -> float: ...

    @property
    def mu(self) -> float | None: ...

    @property
    def accountant(self) -> str: ...

    def compose(self, name: str, event: dp_accounting.DpEvent, **description: Any) -> Release: ...

    def epsilon_after_event(self, event: dp_accounting.DpEvent) -> float: ...

    def report(self) -> dict[str, Any]: ...


def split_mu(
    mu: float, fractions: Mapping[str, float], rest: str | None = None
) -> dict[str, float]:
    """``{part: sqrt(f_part) * mu}`` for fractions of ``mu^2``; ``rest`` names a part that gets
    ``1 - sum(fractions)``. The fractions (and the rest) must be positive and sum to at most 1.

    >>> split_mu(2.0, {"gram": 0.25}, rest="sums")   # {"gram": 1.0, "sums": sqrt(3)}
    """
    parts = {name: check_fraction(name, f) for name, f in fractions.items()}
    total = math.fsum(parts.values())
    if rest is not None:
        if not total < 1:
            raise ValueError(f"the budget fractions {parts} leave nothing for {rest!r}")
        parts[rest] = 1.0 - total
    elif total > 1 + 1e-12:
        raise ValueError(f"the budget fractions {parts} sum to {total} > 1")
    return {name: math.sqrt(f) * mu for name, f in parts.items()}


@dataclass(frozen=True)
class Allowance:
    """The budget one method may plan against: ``mu`` (GDP) and, for non-Gaussian releases,
    ``admits(events)``: whether those events fit on top of what is already planned."""

    mu: float
    epsilon: float
    delta: float
    admits_fn: Callable[[Sequence[dp_accounting.DpEvent]], bool] | None = None
    spent_mu: float | None = None  # the GDP mu the ledger holds already (None: not all GDP)
    discretization: float | None = None  # the ledger's PLD grid

    def __post_init__(self) -> None:
        if not (math.isinf(self.mu) or self.mu > 0):
            raise BudgetExceededError(f"no privacy budget is left for the method (mu={self.mu})")

    @property
    def unlimited(self) -> bool:
        return math.isinf(self.mu)

    def gaussian_std(self, sensitivity: float, count: int = 1) -> float:
        """Noise std of ``count`` Gaussian releases of sensitivity C that spend this allowance
        together: ``sqrt(count) C / mu`` (0 for an unlimited budget)."""
        mu = self.mu * SPEND_MARGIN
        if math.isinf(mu):
            return 0.0
        return math.sqrt(count) * sensitivity / mu

    def split(
        self, fractions: Mapping[str, float], rest: str | None = None
    ) -> dict[str, Allowance]:
        """Parts of this allowance by fractions of mu^2 (``split_mu``); only GDP parts."""
        return {
            name: Allowance(mu, self.epsilon, self.delta)
            for name, mu in split_mu(self.mu, fractions, rest).items()
        }

    def admits(self, events: Sequence[dp_accounting.DpEvent]) -> bool:
        """True when ``events`` (composed with PLD with everything before) fit the budget."""
        if self.admits_fn is None:
            raise ValueError("this allowance cannot check non-Gaussian events")
        return self.admits_fn(events)


def remaining_allowance(ledger: Ledger, share: float = 1.0) -> Allowance:
    """What is left in ``ledger`` (times ``share`` of mu), as an Allowance; BudgetExceededError when
    nothing usable is left."""
    left = ledger.remaining_mu
    if left is None:
        raise ValueError(
            "the ledger already holds a non-Gaussian release, so its remaining budget is not a "
            "GDP mu; plan the Gaussian releases first"
        )
    if not (math.isinf(left) or left > NEGLIGIBLE * ledger.mu_budget):
        raise BudgetExceededError(
            f"no privacy budget is left (epsilon spent {ledger.epsilon_spent:.6g} of "
            f"{ledger.epsilon:.6g})"
        )

    def admits(events: Sequence[dp_accounting.DpEvent]) -> bool:
        if not events:
            return True
        event = events[0] if len(events) == 1 else dp_accounting.ComposedDpEvent(list(events))
        return ledger.epsilon_after_event(event) <= ledger.epsilon * (1 + 1e-9)

    return Allowance(
        share * left,
        ledger.epsilon,
        ledger.delta,
        admits,
        spent_mu=ledger.mu,
        discretization=ledger.value_discretization_interval,
    )


__all__ = ["Allowance", "Ledger", "remaining_allowance", "split_mu"]
