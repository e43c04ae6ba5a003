"""Exact privacy accounting for DP linear probes (add-or-remove-one adjacency, N public).

Full-batch Gaussian steps are exactly mu-GDP (mu = sqrt(T)/sigma) and convert to (epsilon, delta)
with the analytic Gaussian curve; Poisson-subsampled steps go through dp-accounting's PLD
accountant; ``PrivacyLedger.compose`` records named releases as dp-accounting events and refuses to
overspend; ``BudgetFile`` keeps a dataset's budget across runs beside its store. ``__all__`` is the
public API; the modules' other names are the package's own.

The names below are imported on first use, so that ``python -m accounting`` checks its arguments
(and refuses bad ones) before dp-accounting and SciPy are loaded.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "BudgetExceededError": "accounting.ledger",
    "BudgetFile": "accounting.budget_file",
    "PrivacyLedger": "accounting.ledger",
    "Release": "accounting.ledger",
    "delta_from_mu": "accounting.gdp",
    "epsilon_from_mu": "accounting.gdp",
    "epsilon_full_batch": "accounting.gdp",
    "epsilon_poisson": "accounting.poisson",
    "event_from_dict": "accounting.events",
    "event_to_dict": "accounting.events",
    "gaussian_event": "accounting.events",
    "mu_from_epsilon": "accounting.gdp",
    "noise_multiplier_full_batch": "accounting.gdp",
    "noise_multiplier_poisson": "accounting.poisson",
    "poisson_event": "accounting.poisson",
    "rdp_epsilon": "accounting.poisson",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'accounting' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
