"""``dp_gd``: T full-batch noisy clipped gradient steps from W = 0, with an optax optimiser.

Step t (t = 0..T-1) releases the clipped gradient sum plus noise and updates with the sum over
the public divisor n:

    g_t = (sum_i clip_C(grad_i(W_t)) + N(0, (sigma C)^2 I)) / n,    W_{t+1} = opt(W_t, g_t),

with ``sigma = sqrt(T) / mu`` (T releases of sensitivity C are exactly sqrt(T)/sigma-GDP). The
defaults (T, optimiser, learning rate) come from a data-independent rule
(``methods.common.descent_defaults``; docs/architecture.md, "Default settings").
"""

from __future__ import annotations

from dataclasses import dataclass

from private_head._budget import Allowance
from private_head._methods import Context, Method, PublicInfo, register_method
from private_head._methods._descent import DescentOptions, descend, descent_settings, head_from
from private_head._plan import Plan, PlannedRelease, Releaser
from private_head._rows import Rows

RELEASE = "dp_gd/clipped_gradient_sums"


@dataclass(frozen=True, kw_only=True)
class DpGdOptions(DescentOptions):
    """T full-batch steps of an optax optimiser."""


def plan(options: DpGdOptions, public: PublicInfo, allowance: Allowance) -> Plan:
    settings = descent_settings(options, public.num_classes, public.dataset_size, allowance.mu)
    C, T = settings.clip_norm, settings.steps
    release = PlannedRelease(RELEASE, C, allowance.gaussian_std(C, count=T), count=T)
    return Plan((release,), settings)


def run(plan: Plan, rows: Rows, releaser: Releaser, context: Context):
    params = descend(
        rows, context.preprocessing, plan.settings, releaser, RELEASE, context.public.dataset_size
    )
    return head_from(params, plan.settings)


METHOD = register_method(
    Method("dp_gd", DpGdOptions, plan, run, "T full-batch noisy steps (sgd, momentum, adam, lamb)")
)
