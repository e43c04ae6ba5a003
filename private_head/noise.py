"""Noise calibration for full-batch releases, charged to the ledger before any noise is drawn.

T full-batch Gaussian releases of a sum with sensitivity C and noise std ``sigma * C`` are exactly
mu-GDP with ``mu = sqrt(T) / sigma`` (DESIGN.md 4). A method spends what the ledger has left,
``mu_left = ledger.remaining_mu`` (the budget after e.g. a private mean), so

    sigma = sqrt(T) / mu_left.
"""

from __future__ import annotations

import math
from typing import Any

from accounting import BudgetExceededError

# Spend a hair less than what is left, so that float rounding never trips the ledger's check.
_MARGIN = 1.0 - 1e-12
# A remaining mu below this fraction of the budget counts as spent (it could buy only pure noise).
_NEGLIGIBLE = 1e-4


def full_batch_noise_multiplier(ledger: Any, steps: int) -> float:
    """``sigma = sqrt(T) / ledger.remaining_mu`` (0 on an unlimited ledger); a clear error when
    nothing (GDP) is left."""
    mu_left = ledger.remaining_mu
    if mu_left is None:
        raise ValueError(
            "the ledger already holds a non-Gaussian release, so its remaining "
            "budget is not a GDP mu; full-batch methods need a Gaussian-only ledger"
        )
    if not (math.isinf(mu_left) or mu_left > _NEGLIGIBLE * ledger.mu_budget):
        raise BudgetExceededError(
            f"no privacy budget is left (epsilon spent "
            f"{ledger.epsilon_spent:.6g} of {ledger.epsilon:.6g})"
        )
    return math.sqrt(steps) / (mu_left * _MARGIN)


def charge_full_batch(ledger: Any, name: str, clip_norm: float, steps: int) -> float:
    """Record ``steps`` releases of a clipped sum (sensitivity C) and return the noise std."""
    noise_std = full_batch_noise_multiplier(ledger, steps) * clip_norm
    ledger.record_gaussian(name, sensitivity=clip_norm, noise_std=noise_std, count=steps)
    return noise_std
