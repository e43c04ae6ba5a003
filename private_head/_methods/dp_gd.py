"""``dp_gd``: T full-batch noisy clipped gradient steps from W = 0, with an optax optimiser.

Step t (t = 0..T-1) releases the clipped gradient sum plus noise and updates with the sum over
the public divisor n:

    g_t = (sum_i clip_C(grad_i(W_t)) + N(0, (sigma C)^2 I)) / n,    W_{t+1} = opt(W_t, g_t),

with ``sigma = sqrt(T) / mu`` (T releases of sensitivity C are exactly sqrt(T)/sigma-GDP). The
defaults (T, optimiser, learning rate) come from a data-independent rule
(``_methods._descent.descent_defaults``; docs/architecture.md, "Default settings").
"""

from __future__ import annotations

from dataclasses import dataclass

from private_head._budget import Allowance
from private_head._method import Context, Fitted, Method, PublicInfo
from private_head._methods._descent import DescentOptions, descend, descent_settings, fitted
from private_head._optimizers import DescentSettings
from private_head._plan import Plan, PlannedRelease
from private_head._registry import register_method
from private_head._release import Releaser
from private_head._rows import Rows

RELEASE = "dp_gd/clipped_gradient_sums"


@dataclass(frozen=True, kw_only=True)
class DpGdOptions(DescentOptions):
    """T full-batch steps of an optax optimiser."""


def plan(options: DpGdOptions, public: PublicInfo, allowance: Allowance) -> Plan[DescentSettings]:
    settings = descent_settings(
        options, public.num_classes, public.dataset_size, allowance.mu, public.dim
    )
    C, T = settings.clip_norm, settings.steps
    std = allowance.gaussian_std(C, count=T)
    return Plan((PlannedRelease.gaussian(RELEASE, C, std, count=T),), settings)


def run(plan: Plan[DescentSettings], rows: Rows, releaser: Releaser, context: Context) -> Fitted:
    n = context.public.dataset_size
    params = descend(rows, context.preprocessing, plan.settings, releaser, RELEASE, n)
    return fitted(params, plan.settings)


METHOD = register_method(
    Method("dp_gd", DpGdOptions, plan, run, "T full-batch noisy steps (sgd, momentum, adam, lamb)")
)
