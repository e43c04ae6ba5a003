"""``train``: the releases that every fit makes before its method, the method's plan, its charge and
its run, on rows already opened (steps 3-6 of "What fit does", docs/architecture.md):

3. the divisor n: the caller's public ``dataset_size``, or the noisy count ``N + N(0, 1 / mu_n^2)``
   (planned, charged, released first; rounded, at least 1);
4. with ``center="private"``, the private mean of the bounded rows (planned, charged, released:
   a sum of sensitivity r, divided by n);
5. the method plans its releases from public information and the allowance left; the whole plan
   is charged to the ledger (which refuses to overspend) before the method runs;
6. the method runs; every planned draw must have been made; the head must be finite.

Budget shares are fractions of the total mu^2 (``_budget.split_mu``): ``count_budget_fraction``
to the count, ``center_budget_fraction`` to the mean, the rest to the method.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from private_head._budget import Allowance, Ledger, remaining_allowance, split_mu
from private_head._method import Context, Fitted, Method, PublicInfo
from private_head._options import DatasetSize, Options, Preprocess
from private_head._plan import Plan, PlannedRelease
from private_head._preprocessing import Preprocessing
from private_head._release import PlanReleaser
from private_head._rows import Rows
from private_head._settings import Settings
from private_head._statistics import RowSum
from private_head._validation import check_public_mean

COUNT, CENTER = "dataset_size/noisy_count", "center/row_sum"


@dataclass(frozen=True)
class Trained:
    """A trained head with everything its reports need: the method's run (``fitted``: the
    parameters, its report entries, a selection's choice), the preprocessing, the settings, how
    the divisor was obtained, and the plan that was charged."""

    weights: np.ndarray
    bias: np.ndarray
    fitted: Fitted
    preprocessing: Preprocessing
    settings: dict[str, object]
    dataset_size: dict[str, object]
    plan: Plan[Settings]


def preprocessing_of(opts: Preprocess, public_mean: Any, dim: int) -> Preprocessing:
    """The map before any private statistic (the private mean is filled in later)."""
    kind = "normalize" if opts.normalize else "shrink"
    if opts.center == "public" or public_mean is not None:
        if public_mean is None:
            raise ValueError("center='public' needs public_mean (a [D] vector from public data)")
        if opts.center == "private":
            raise ValueError("public_mean was given with center='private'; choose one")
        return Preprocessing(kind, opts.feature_norm, "public", check_public_mean(public_mean, dim))
    return Preprocessing(kind, opts.feature_norm)


def train(
    rows: Rows,
    method: Method[Any, Any],
    options: Options,
    preprocess: Preprocess,
    size: DatasetSize,
    ledger: Ledger,
    key: jax.Array,
    *,
    public_mean: Any = None,
) -> Trained:
    """Steps 3-6 of the module docstring on ``rows`` against ``ledger``."""
    pre = preprocessing_of(preprocess, public_mean, rows.dim)
    private = not math.isinf(ledger.mu_budget)
    shares = {}
    if private and size.dataset_size is None:
        shares["count"] = size.count_budget_fraction
    if preprocess.center == "private" and private:
        shares["center"] = preprocess.center_budget_fraction
    mu = split_mu(remaining_allowance(ledger).mu, shares, rest="method") if shares else {}
    keys = _split3(key)

    n, size_report = _divisor(rows, size, ledger, mu.get("count"), keys[0], private)
    if preprocess.center == "private":
        pre = _private_mean(rows, pre, ledger, mu.get("center"), n, keys[1])
    public = PublicInfo(rows.dim, rows.num_classes, n, pre.feature_norm)
    allowance = (
        remaining_allowance(ledger) if private else Allowance(math.inf, math.inf, ledger.delta)
    )
    plan = method.plan(options, public, allowance)
    plan.charge(ledger)
    releaser = PlanReleaser(plan, keys[2])
    fitted = method.run(plan, rows, releaser, Context(public, pre))
    missing = releaser.unreleased()
    if missing:
        raise RuntimeError(f"method {method.name!r} charged draws it never made: {missing}")
    weights = np.asarray(fitted.weights, np.float32)
    bias = np.asarray(fitted.bias, np.float32)
    if weights.shape != (rows.dim, rows.num_classes) or bias.shape != (rows.num_classes,):
        raise RuntimeError(
            f"method {method.name!r} returned weights {weights.shape} and bias {bias.shape}; "
            f"expected ({rows.dim}, {rows.num_classes}) and ({rows.num_classes},)"
        )
    if private and not ledger.releases:
        raise RuntimeError(f"method {method.name!r} returned parameters without charging anything")
    if not (np.isfinite(weights).all() and np.isfinite(bias).all()):
        raise ValueError(
            f"training with method {method.name!r} diverged (non-finite weights); lower the "
            "learning_rate or the number of steps"
        )
    settings: dict[str, object] = {
        "method": method.name,
        "options": options.to_dict(),
        "resolved": plan.settings.to_dict(),
        "preprocess": preprocess.to_dict(),
        "dataset_size": size.to_dict(),
    }
    return Trained(weights, bias, fitted, pre, settings, size_report, plan)


@jax.jit
def _split3(key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``jax.random.split(key, 3)`` as three keys, in one compiled call."""
    first, second, third = jax.random.split(key, 3)
    return first, second, third


def _divisor(
    rows: Rows, size: DatasetSize, ledger: Ledger, mu: float | None, key: jax.Array, private: bool
) -> tuple[float, dict[str, object]]:
    """The public divisor n and how it was obtained (never the true count)."""
    if size.dataset_size is not None:
        return float(size.dataset_size), {"source": "public", "value": size.dataset_size}
    if not private:  # the non-private ceiling: nothing is protected, nothing is reported
        return float(rows.global_rows), {"source": "true_count_not_private"}
    std = Allowance(mu, ledger.epsilon, ledger.delta).gaussian_std(1.0)
    plan = Plan((PlannedRelease.gaussian(COUNT, 1.0, std),), Settings())
    plan.charge(ledger)
    released = PlanReleaser(plan, key).release(COUNT, np.float64(rows.global_rows))
    n = max(1.0, float(np.round(np.asarray(released, np.float64))))
    return n, {
        "source": "noisy_count",
        "value": n,
        "noise_std": std,
        "budget_fraction": size.count_budget_fraction,
    }


def _private_mean(
    rows: Rows, pre: Preprocessing, ledger: Ledger, mu: float | None, n: float, key: jax.Array
) -> Preprocessing:
    """The released mean ``(sum_i bound(x_i) + N(0, (r / mu_c)^2 I)) / n``."""
    bound = Preprocessing(pre.kind, pre.feature_norm)
    if math.isinf(ledger.mu_budget):  # the non-private ceiling: the exact mean
        total = rows.sum(RowSum(), None, bound)
        return Preprocessing(pre.kind, pre.feature_norm, "private", np.asarray(total) / n)
    r = pre.feature_norm
    std = Allowance(mu, ledger.epsilon, ledger.delta).gaussian_std(r)
    plan = Plan((PlannedRelease.gaussian(CENTER, r, std),), Settings())
    plan.charge(ledger)
    total = PlanReleaser(plan, key).release(CENTER, rows.sum(RowSum(), None, bound))
    return Preprocessing(pre.kind, pre.feature_norm, "private", np.asarray(total) / n)


__all__ = ["COUNT", "CENTER", "Trained", "preprocessing_of", "train"]
