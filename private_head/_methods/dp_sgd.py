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

import jax
import jax.numpy as jnp

from accounting import BudgetExceededError, noise_multiplier_poisson, poisson_event
from private_head._budget import Allowance
from private_head._method import Context, Fitted, Method, PublicInfo
from private_head._methods._descent import DescentOptions, descent_settings, fitted
from private_head._optimizers import DescentSettings, apply_step, head_bias, init_params, init_state
from private_head._options import option
from private_head._plan import Plan, PlannedRelease
from private_head._registry import register_method
from private_head._release import Releaser
from private_head._rows import Rows
from private_head._settings import Settings
from private_head._statistics import GradientSums
from private_head._validation import check_count

RELEASE = "dp_sgd/poisson_sampled_clipped_gradient_sums"
DEFAULT_BATCH_FRACTION = 0.5  # the default expected batch: half of the public n


@dataclass(frozen=True, kw_only=True)
class DpSgdOptions(DescentOptions):
    """Poisson-sampled steps; ``batch_size`` defaults to half of the public or noisy n."""

    batch_size: int | None = option(None, "expected batch size q n", shown="half of n")

    def validate(self) -> None:
        super().validate()
        check_count("batch_size", self.batch_size)


@dataclass(frozen=True)
class SgdSettings(Settings):
    """The descent's settings, the sampling threshold ``t = floor(q 2^64)`` and the expected
    batch ``q n`` every step divides by."""

    descent: DescentSettings
    threshold: int
    expected_batch: float


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

    options = {"prior_mu": allowance.spent_mu or 0.0}
    if allowance.discretization is not None:
        options["value_discretization_interval"] = allowance.discretization
    try:
        sigma = noise_multiplier_poisson(allowance.epsilon, allowance.delta, rate, steps, **options)
    except ValueError as err:
        raise BudgetExceededError(f"no privacy budget is left for dp_sgd: {err}") from err
    for _ in range(20):
        if allowance.admits([poisson_event(sigma, rate, steps)]):
            return sigma
        sigma *= 1.001
    raise BudgetExceededError("no privacy budget is left for dp_sgd")


def plan(options: DpSgdOptions, public: PublicInfo, allowance: Allowance) -> Plan[SgdSettings]:
    settings = descent_settings(
        options, public.num_classes, public.dataset_size, allowance.mu, public.dim
    )
    batch = options.batch_size or max(1, round(DEFAULT_BATCH_FRACTION * public.dataset_size))
    t = threshold(min(1.0, batch / public.dataset_size))
    rate = realised_rate(t)
    T = settings.steps
    sigma = calibrate(allowance, rate, T)
    release = PlannedRelease.poisson_sampled(
        RELEASE,
        settings.clip_norm,
        sigma,
        rate,
        count=T,
        description=f"{T} Poisson-sampled steps, rate {rate!r}, noise multiplier {sigma!r} (PLD)",
    )
    return Plan((release,), SgdSettings(settings, t, rate * public.dataset_size))


def run(plan: Plan[SgdSettings], rows: Rows, releaser: Releaser, context: Context) -> Fitted:
    settings = plan.settings.descent
    params = init_params(rows.dim, settings)
    state = init_state(params, settings=settings)
    stat = GradientSums(settings.loss, settings.train_bias)
    start, stop = rows.offset, rows.offset + rows.local_rows
    for step in range(settings.steps):
        key = releaser.sampling_key(RELEASE, step)
        sample = poisson_sample(key, rows.global_rows, plan.settings.threshold)
        bias = head_bias(params, settings)
        sums = rows.sum(
            stat,
            (params, bias, settings.clip_norm),
            context.preprocessing,
            weights=sample[start:stop],
        )
        noisy = releaser.release(RELEASE, sums)
        params, state = apply_step(
            params, state, noisy, plan.settings.expected_batch, settings=settings
        )
    return fitted(params, settings)


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
