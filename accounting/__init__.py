"""Exact privacy accounting for DP linear probes (add-or-remove-one adjacency, N public).

Full-batch Gaussian steps are exactly mu-GDP (mu = sqrt(T)/sigma) and convert to (epsilon, delta)
with the analytic Gaussian curve; Poisson-subsampled steps go through dp-accounting's PLD
accountant; ``PrivacyLedger.compose`` records named releases as dp-accounting events and refuses to
overspend; ``BudgetFile`` keeps a dataset's budget across runs beside its store. ``__all__`` is the
public API; the modules' other names are the package's own.
"""

from accounting.budget_file import BudgetFile
from accounting.events import event_from_dict, event_to_dict, gaussian_event
from accounting.gdp import (
    delta_from_mu,
    epsilon_from_mu,
    epsilon_full_batch,
    mu_from_epsilon,
    noise_multiplier_full_batch,
)
from accounting.ledger import BudgetExceededError, PrivacyLedger, Release
from accounting.poisson import (
    epsilon_poisson,
    noise_multiplier_poisson,
    poisson_event,
    rdp_epsilon,
)

__all__ = [
    "BudgetExceededError",
    "BudgetFile",
    "PrivacyLedger",
    "Release",
    "delta_from_mu",
    "epsilon_from_mu",
    "epsilon_full_batch",
    "epsilon_poisson",
    "event_from_dict",
    "event_to_dict",
    "gaussian_event",
    "mu_from_epsilon",
    "noise_multiplier_full_batch",
    "noise_multiplier_poisson",
    "poisson_event",
    "rdp_epsilon",
]
