"""``dp_prototypes``: nearest private class mean (Euclidean) or nearest class direction (cosine).

With rows bounded to ``||x_i|| <= r``:

    S~_k = sum_{i: y_i = k} x_i + N(0, (r / mu_s)^2 I_D)   class sums, [K, D]
    n~_k = |{i: y_i = k}|      + N(0, (1 / mu_n)^2)         class counts, [K] (metric="euclidean")

Adding or removing one example changes one row of S by ``x`` (L2 sensitivity r) and one count by
1 (a histogram: L2 sensitivity 1).

- ``metric="euclidean"``: ``m_k = S~_k / max(n~_k, count_floor)``; the nearest mean is the linear
  head ``W[:, k] = 2 m_k``, ``b_k = -||m_k||^2``. Budget ``mu_n^2 = count_fraction mu^2``, the rest
  to the sums.
- ``metric="cosine"`` (default): ``W[:, k] = S~_k / ||S~_k||``, ``b = 0``; a cosine assignment
  ignores each prototype's scale, so no counts are released and the sums get the whole mu.

Unlike the single step, whose weights are the class sums ``n_k m_k`` (large classes win ties),
both ignore the class sizes. The head is blind to the feature covariance.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp

from private_head._budget import Allowance
from private_head._method import Context, Fitted, Method, PublicInfo
from private_head._options import Options, option
from private_head._plan import Plan, PlannedRelease
from private_head._registry import register_method
from private_head._release import Releaser
from private_head._rows import Rows
from private_head._statistics import ClassSumsAndCounts
from private_head._validation import check_fraction, check_positive

SUMS, COUNTS = "dp_prototypes/class_sums", "dp_prototypes/class_counts"


@dataclass(frozen=True, kw_only=True)
class PrototypesOptions(Options):
    """The prototype metric and, for Euclidean prototypes, the counts' budget."""

    metric: str = option(
        "cosine",
        "cosine (class directions) or euclidean (class means)",
        choices=("cosine", "euclidean"),
    )
    count_fraction: float = option(0.1, "share of mu^2 for the class counts (euclidean)")
    count_floor: float = option(1.0, "a noisy count below this is raised to it (euclidean)")

    def validate(self) -> None:
        check_fraction("count_fraction", self.count_fraction)
        check_positive("count_floor", self.count_floor)


def plan(
    options: PrototypesOptions, public: PublicInfo, allowance: Allowance
) -> Plan[PrototypesOptions]:
    r = public.feature_norm
    if options.metric == "cosine":
        return Plan((PlannedRelease.gaussian(SUMS, r, allowance.gaussian_std(r)),), options)
    parts = allowance.split({"counts": options.count_fraction}, rest="sums")
    releases = (
        PlannedRelease.gaussian(SUMS, r, parts["sums"].gaussian_std(r)),
        PlannedRelease.gaussian(COUNTS, 1.0, parts["counts"].gaussian_std(1.0)),
    )
    return Plan(releases, options)


def run(plan: Plan[PrototypesOptions], rows: Rows, releaser: Releaser, context: Context) -> Fitted:
    K = rows.num_classes
    sums, counts = rows.sum(ClassSumsAndCounts(K), None, context.preprocessing)
    sums = releaser.release(SUMS, sums)
    if plan.settings.metric == "cosine":
        norms = jnp.linalg.norm(sums, axis=1, keepdims=True)
        return Fitted((sums / jnp.maximum(norms, 1e-30)).T, jnp.zeros(K, jnp.float32))
    counts = releaser.release(COUNTS, counts)
    means = sums / jnp.maximum(counts, plan.settings.count_floor)[:, None]
    return Fitted(2.0 * means.T, -jnp.sum(means * means, axis=1))


METHOD = register_method(
    Method(
        "dp_prototypes",
        PrototypesOptions,
        plan,
        run,
        "nearest noisy class direction (cosine) or mean (euclidean)",
    )
)
