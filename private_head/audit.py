"""Empirical privacy audit: a statistical LOWER bound on the epsilon a mechanism really spends.

The audit plays the privacy game of the (epsilon, delta) definition. Two neighbouring datasets
differ by one worst-case "canary" example (add/remove adjacency): ``D`` and ``D' = D + canary``.
The real mechanism is run many times on each (vectorised with ``jax.vmap`` over noise keys), a
distinguishing test "canary present?" is applied to every output, and its error rates bound
epsilon from below. For any (epsilon, delta)-DP mechanism and any test (Kairouz et al. 2015),

    FPR + exp(eps) * FNR >= 1 - delta   and   FNR + exp(eps) * FPR >= 1 - delta,

so with one-sided Clopper-Pearson upper bounds FPR_hi, FNR_hi (each at level alpha/2, jointly
holding with probability >= 1 - alpha)

    eps_lb = max( log((1 - delta - FNR_hi) / FPR_hi),  log((1 - delta - FPR_hi) / FNR_hi) ),

clamped at 0 (Jagielski et al. 2020, "Auditing differentially private machine learning";
Nasr et al. 2021, "Adversary instantiation"). With probability >= 1 - alpha the true epsilon is at
least eps_lb; a correct mechanism therefore gives eps_lb <= claimed epsilon (except with
probability alpha), and eps_lb > claimed epsilon is evidence of a bug. The audit can only prove a
mechanism BROKEN; a low bound is not a proof of privacy.

The test statistic is the projection of the released gradient sum (or head weights) on the
canary's clipped-gradient direction, oriented so that larger means "canary present". The threshold
is chosen on calibration runs and the bound computed on separate evaluation runs, so the
threshold search does not inflate the bound.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from scipy.stats import beta

ReleaseFn = Callable[[Any, jax.Array], Any]


def clopper_pearson(successes: Any, trials: int, alpha: float = 0.05) -> tuple[Any, Any]:
    """Exact two-sided (1 - alpha) Clopper-Pearson interval for a binomial proportion.

    lo = Beta^-1(alpha/2; k, n - k + 1) (0 when k = 0), hi = Beta^-1(1 - alpha/2; k + 1, n - k)
    (1 when k = n). Each end alone is a one-sided bound at level alpha/2. ``successes`` may be
    an array (vectorised); floats are returned for scalar input.
    """
    k = np.asarray(successes, dtype=np.float64)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    if trials < 1 or np.any(k < 0) or np.any(k > trials) or np.any(k != np.round(k)):
        raise ValueError(f"need integer successes in [0, trials] and trials >= 1; got "
                         f"successes={successes}, trials={trials}")
    with np.errstate(invalid="ignore"):
        lo = np.where(k > 0, beta.ppf(alpha / 2, k, trials - k + 1), 0.0)
        hi = np.where(k < trials, beta.ppf(1 - alpha / 2, k + 1, trials - k), 1.0)
    if lo.ndim == 0:
        return float(lo), float(hi)
    return lo, hi


def epsilon_lower_bound(fp_count: Any, fn_count: Any, trials_per_world: int, delta: float,
                        alpha: float = 0.05) -> Any:
    """Epsilon lower bound from a test's false positives and false negatives (module docstring).

    ``fp_count``: runs on D the test called "canary present"; ``fn_count``: runs on D' it called
    "absent"; both out of ``trials_per_world``. eps_lb = max(log((1-delta-FNR_hi)/FPR_hi),
    log((1-delta-FPR_hi)/FNR_hi)) with Clopper-Pearson upper bounds at level alpha/2 each,
    clamped at 0. Holds with probability >= 1 - alpha. Vectorised over the counts.
    """
    if not 0 <= delta < 1:
        raise ValueError(f"delta must lie in [0, 1), got {delta}")
    fpr_hi = clopper_pearson(fp_count, trials_per_world, alpha)[1]
    fnr_hi = clopper_pearson(fn_count, trials_per_world, alpha)[1]
    fpr_hi, fnr_hi = np.asarray(fpr_hi), np.asarray(fnr_hi)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.log(np.maximum(1 - delta - fnr_hi, 0.0)) - np.log(fpr_hi)
        b = np.log(np.maximum(1 - delta - fpr_hi, 0.0)) - np.log(fnr_hi)
    eps = np.maximum(np.maximum(np.nan_to_num(a, nan=0.0, neginf=0.0),
                                np.nan_to_num(b, nan=0.0, neginf=0.0)), 0.0)
    return float(eps) if eps.ndim == 0 else eps


@dataclass(frozen=True)
class AuditResult:
    """Outcome of ``audit_mechanism``.

    ``epsilon_lower_bound`` holds with probability >= 1 - ``alpha``; ``fpr`` and ``fnr`` are the
    empirical error rates of the test at ``threshold`` on the evaluation runs (``runs`` per world).
    """

    epsilon_lower_bound: float
    epsilon_claimed: float
    delta: float
    fpr: float
    fnr: float
    threshold: float
    runs: int
    alpha: float

    @property
    def consistent(self) -> bool:
        """True when the measured lower bound does not contradict the claimed epsilon."""
        return self.epsilon_lower_bound <= self.epsilon_claimed


@dataclass(frozen=True)
class Neighbours:
    """Two datasets differing by one example: ``without`` = D, ``with_canary`` = D + canary.

    ``direction`` is a unit vector (a pytree shaped like the release) along which the canary moves
    the release; ``projection_statistic(direction)`` is the matching test statistic.
    """

    without: Any
    with_canary: Any
    direction: Any


def projection_statistic(direction: Any) -> Callable[[Any], jax.Array]:
    """Statistic <release, direction> summed over the leaves of the pytrees (a scalar)."""

    def statistic(release: Any) -> jax.Array:
        parts = jax.tree.map(lambda r, d: jnp.vdot(jnp.asarray(r, jnp.float32),
                                                   jnp.asarray(d, jnp.float32)),
                             release, direction)
        return sum(jax.tree.leaves(parts))

    return statistic


def sample_statistics(release_fn: ReleaseFn, dataset: Any, statistic: Callable[[Any], jax.Array],
                      key: jax.Array, runs: int, batch: int = 8192) -> np.ndarray:
    """``statistic(release_fn(dataset, k))`` for ``runs`` independent keys, vmapped in batches.

    The dataset is the same in every run (an unbatched argument of the vmap), so whatever the
    mechanism computes from the data alone is computed once per batch; only the noise varies.
    Every batch has the same shape (the last is padded), so this compiles once per dataset shape.
    """
    batch = max(1, min(batch, runs))
    fn = jax.jit(jax.vmap(lambda data, k: statistic(release_fn(data, k)), in_axes=(None, 0)))
    keys = jax.random.split(key, -(-runs // batch) * batch).reshape(-1, batch, *key.shape)
    out = np.concatenate([np.asarray(fn(dataset, k)) for k in keys])[:runs]
    if not np.all(np.isfinite(out)):
        raise ValueError("the mechanism released non-finite values; audit a finite mechanism")
    return out.astype(np.float64)


def _counts(stat0: np.ndarray, stat1: np.ndarray, thresholds: np.ndarray):
    """False positives (#D runs > t) and false negatives (#D' runs <= t) for each threshold."""
    s0, s1 = np.sort(stat0), np.sort(stat1)
    fp = s0.size - np.searchsorted(s0, thresholds, side="right")
    fn = np.searchsorted(s1, thresholds, side="right")
    return fp, fn


def best_threshold(stat0: np.ndarray, stat1: np.ndarray, delta: float, alpha: float = 0.05,
                   candidates: int = 4000) -> float:
    """The threshold (among quantiles of the pooled statistics) maximising the epsilon bound.

    Use CALIBRATION runs here and evaluate the chosen threshold on fresh runs.
    """
    if stat0.size != stat1.size:
        raise ValueError("need the same number of runs in both worlds")
    pooled = np.concatenate([stat0, stat1])
    thresholds = np.unique(np.quantile(pooled, np.linspace(0.0, 1.0, candidates)))
    fp, fn = _counts(stat0, stat1, thresholds)
    eps = epsilon_lower_bound(fp, fn, stat0.size, delta, alpha)
    return float(thresholds[int(np.argmax(eps))])


def audit_mechanism(release_fn: ReleaseFn, neighbours: Neighbours, *, epsilon_claimed: float,
                    delta: float, runs: int = 50_000, key: jax.Array | None = None,
                    statistic: Callable[[Any], jax.Array] | None = None, alpha: float = 0.05,
                    batch: int = 8192) -> AuditResult:
    """Audit ``release_fn(dataset, key) -> release`` on ``neighbours`` (module docstring).

    Runs the mechanism ``2 * runs`` times on each dataset: the first ``runs`` pick the threshold
    of the test ``statistic(release) > t`` (default: projection on ``neighbours.direction``), the
    other ``runs`` count its false positives and negatives, and ``epsilon_lower_bound`` turns them
    into a bound that holds with probability >= 1 - alpha. ``key`` defaults to a fixed key so that
    an audit in a test is reproducible.
    """
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    statistic = statistic or projection_statistic(neighbours.direction)
    key = jax.random.key(0) if key is None else key
    k_cal0, k_cal1, k_ev0, k_ev1 = jax.random.split(key, 4)

    def sample(data: Any, k: jax.Array) -> np.ndarray:
        return sample_statistics(release_fn, data, statistic, k, runs, batch)

    cal0, cal1 = sample(neighbours.without, k_cal0), sample(neighbours.with_canary, k_cal1)
    threshold = best_threshold(cal0, cal1, delta, alpha)
    ev0, ev1 = sample(neighbours.without, k_ev0), sample(neighbours.with_canary, k_ev1)
    fp, fn = _counts(ev0, ev1, np.array([threshold]))
    eps = epsilon_lower_bound(int(fp[0]), int(fn[0]), runs, delta, alpha)
    return AuditResult(epsilon_lower_bound=eps, epsilon_claimed=float(epsilon_claimed),
                       delta=float(delta), fpr=int(fp[0]) / runs, fnr=int(fn[0]) / runs,
                       threshold=threshold, runs=runs, alpha=alpha)


def gaussian_shift_epsilon_bound(mu: float, runs: int, delta: float, alpha: float = 0.05,
                                 seed: int = 0) -> float:
    """The audit's bound on the ideal mu-GDP release N(0,1) vs N(mu,1) with ``runs`` per world.

    What a perfect implementation of a mechanism with GDP parameter mu can show at this sample
    size: a reference for how tight an audit of the real code is.
    """
    if not (mu >= 0 and math.isfinite(mu)):
        raise ValueError(f"mu must be finite and >= 0, got {mu}")
    rng = np.random.default_rng(seed)
    cal0, cal1 = rng.standard_normal(runs), rng.standard_normal(runs) + mu
    t = best_threshold(cal0, cal1, delta, alpha)
    ev0, ev1 = rng.standard_normal(runs), rng.standard_normal(runs) + mu
    fp, fn = _counts(ev0, ev1, np.array([t]))
    return epsilon_lower_bound(int(fp[0]), int(fn[0]), runs, delta, alpha)
