"""``dp_sgd``: Poisson-sampled noisy clipped gradient steps from W = 0 (PLD accounting).

Step t includes every row independently with probability ``q = batch_size / n`` (n: the public
divisor; ``batch_size`` is the expected batch size) and updates with

    g_t = (sum_{i in B_t} clip_C(grad_i(W_t)) + N(0, (sigma C)^2 I)) / (q n),

dividing by the public expected batch size, never by |B_t|. Sampling is exact: row i is in the
sample when two 32-bit random words ``(h, l)`` satisfy ``h 2^32 + l < t`` for the integer
threshold ``t = floor(q 2^64)``, so the realised rate is ``t / 2^64``, and that (rounded up) is the
rate the accountant is given. sigma is the smallest noise multiplier for which T steps of
``PoissonSampled(q, Gaussian(sigma))`` fit the allowance under dp-accounting's PLD accountant
(add-or-remove-one). Each step is one masked pass over all rows (``Rows.sum`` with the sample as
row weights): the running time does not depend on the sample. Defaults: ``batch_size = n / 2``
and the steps, optimiser, learning rate and clip norm of ``dp_gd``'s rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import dp_accounting
import jax
import jax.numpy as jnp

from accounting import BudgetExceededError, noise_multiplier_poisson
from private_head._budget import Allowance
from private_head._methods import Context, Method, PublicInfo, register_method
from private_head._methods._descent import DescentOptions, descent_settings, head_from
from private_head._optimizers import apply_step, head_bias, init_params, init_state
from private_head._options import option
from private_head._plan import POISSON, Plan, PlannedRelease, Releaser
from private_head._rows import Rows
from private_head._statistics import GradientSums

RELEASE = "dp_sgd/poisson_sampled_clipped_gradient_sums"
DEFAULT_BATCH_FRACTION = 0.5  # the default expected batch: half of the public n


@dataclass(frozen=True, kw_only=True)
class DpSgdOptions(DescentOptions):
    """Poisson-sampled steps; ``batch_size`` defaults to half of the public or noisy n."""

    batch_size: int | None = option(None, "expected batch size q n", shown="half of n")

    def validate(self) -> None:
        super().validate()
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")


def threshold(rate: float) -> int:
    """``floor(q 2^64)``: the integer threshold of the exact Bernoulli(q) comparison."""
    return int(Fraction(rate) * 2**64)


def realised_rate(t: int) -> float:
    """``t / 2^64`` rounded up to a float: the rate the sample really has (never understated)."""
    exact = Fraction(t, 2**64)
    rate = float(exact)
    return rate if Fraction(rate) >= exact else math.nextafter(rate, 2.0)


def poisson_sample(key: jax.Array, num_rows: int, t: int) -> jax.Array:
    """Float32 0/1 [num_rows]: row i is in the sample with probability exactly ``t / 2^64``."""
    if t >= 2**64:
        return jnp.ones(num_rows, jnp.float32)
    words = jax.random.bits(key, (num_rows, 2), jnp.uint32)
    hi, lo = jnp.uint32(t >> 32), jnp.uint32(t & 0xFFFFFFFF)
    include = (words[:, 0] < hi) | ((words[:, 0] == hi) & (words[:, 1] < lo))
    return include.astype(jnp.float32)


def calibrate(allowance: Allowance, rate: float, steps: int) -> float:
    """The smallest sigma whose T Poisson-sampled steps the allowance admits: computed for what
    the ledger already spent (memoised, PLD), checked against the ledger itself, and raised by
    0.1% steps in the rare case rounding makes the ledger disagree."""
    if allowance.unlimited:
        raise ValueError("dp_sgd needs a finite epsilon")

    def event(sigma: float) -> dp_accounting.DpEvent:
        step = dp_accounting.PoissonSampledDpEvent(rate, dp_accounting.GaussianDpEvent(sigma))
        return dp_accounting.SelfComposedDpEvent(step, steps)

    options = {"prior_mu": allowance.spent_mu or 0.0}
    if allowance.discretization is not None:
        options["value_discretization_interval"] = allowance.discretization
    try:
        sigma = noise_multiplier_poisson(allowance.epsilon, allowance.delta, rate, steps, **options)
    except ValueError as err:
        raise BudgetExceededError(f"no privacy budget is left for dp_sgd: {err}") from err
    for _ in range(20):
        if allowance.admits([event(sigma)]):
            return sigma
        sigma *= 1.001
    raise BudgetExceededError("no privacy budget is left for dp_sgd")


def plan(options: DpSgdOptions, public: PublicInfo, allowance: Allowance) -> Plan:
    settings = descent_settings(options, public.num_classes, public.dataset_size, allowance.mu)
    batch = options.batch_size or max(1, round(DEFAULT_BATCH_FRACTION * public.dataset_size))
    t = threshold(min(1.0, batch / public.dataset_size))
    rate = realised_rate(t)
    sigma = calibrate(allowance, rate, settings.steps)
    C = settings.clip_norm
    release = PlannedRelease(
        RELEASE,
        C,
        sigma * C,
        count=settings.steps,
        kind=POISSON,
        sampling_rate=rate,
        description=f"{settings.steps} Poisson-sampled steps, rate {rate!r}, noise multiplier "
        f"{sigma!r} (PLD)",
    )
    return Plan(
        (release,), settings, {"threshold": t, "expected_batch": rate * public.dataset_size}
    )


def run(plan: Plan, rows: Rows, releaser: Releaser, context: Context):
    settings, t = plan.settings, plan.notes["threshold"]
    params = init_params(rows.dim, settings)
    state = init_state(params, settings=settings)
    stat = GradientSums(settings.loss, settings.train_bias)
    divisor = plan.notes["expected_batch"]
    start, stop = rows.offset, rows.offset + rows.local_rows
    for step in range(settings.steps):
        sample = poisson_sample(releaser.sampling_key(RELEASE, step), rows.global_rows, t)
        bias = head_bias(params, settings)
        sums = rows.sum(
            stat,
            (params, bias, settings.clip_norm),
            context.preprocessing,
            weights=sample[start:stop],
        )
        noisy = releaser.release(RELEASE, sums)
        params, state = apply_step(params, state, noisy, divisor, settings=settings)
    return head_from(params, settings)


METHOD = register_method(
    Method(
        "dp_sgd",
        DpSgdOptions,
        plan,
        run,
        "Poisson-sampled noisy steps, PLD accounting (batch_size=)",
        gaussian=False,
    )
)
