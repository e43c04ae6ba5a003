"""Exact privacy accounting for DP linear probes (add-or-remove-one adjacency, N public).

Full-batch Gaussian steps are exactly mu-GDP (mu = sqrt(T)/sigma) and convert to (epsilon, delta)
with the analytic Gaussian curve; Poisson-subsampled steps go through dp-accounting's PLD
accountant; PrivacyLedger composes named releases and refuses to overspend; BudgetFile keeps a
dataset's budget across runs beside its store.
"""

from accounting.budget_file import BudgetFile, budget_path
from accounting.gdp import (
    delta_from_mu,
    epsilon_from_mu,
    epsilon_full_batch,
    mu_from_epsilon,
    noise_multiplier_full_batch,
)
from accounting.ledger import BudgetExceededError, PrivacyLedger, Release, gaussian_event_mu
from accounting.poisson import (
    ADJACENCY,
    epsilon_poisson,
    noise_multiplier_poisson,
    pld_accountant,
    poisson_event,
    rdp_epsilon,
)

__all__ = [
    "ADJACENCY",
    "BudgetExceededError",
    "BudgetFile",
    "PrivacyLedger",
    "Release",
    "budget_path",
    "delta_from_mu",
    "epsilon_from_mu",
    "epsilon_full_batch",
    "epsilon_poisson",
    "gaussian_event_mu",
    "mu_from_epsilon",
    "noise_multiplier_full_batch",
    "noise_multiplier_poisson",
    "pld_accountant",
    "poisson_event",
    "rdp_epsilon",
]
