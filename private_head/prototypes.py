"""``dp_prototypes``: nearest private class mean (Euclidean) or nearest class direction (cosine).

With rows preprocessed to ``||x_i|| <= r`` and ``mu = ledger.remaining_mu``:

    S~_k = sum_{i: y_i = k} x_i + N(0, (r / mu_s)^2 I_D)   class sums, [K, D]
    n~_k = |{i: y_i = k}|      + N(0, (1 / mu_n)^2)         class counts, [K] (metric="euclidean")

Adding or removing one example changes one row of S by ``x`` (L2 sensitivity r) and one count by
1 (a histogram: L2 sensitivity 1). Both are Gaussian releases charged before the noise is drawn.

- ``metric="euclidean"``: ``m_k = S~_k / max(n~_k, count_floor)``; the nearest mean,
  ``argmin_k ||x - m_k||^2 = argmax_k (2 m_k . x - ||m_k||^2)``, is the linear head
  ``W[:, k] = 2 m_k``, ``b_k = -||m_k||^2``. Budget: ``mu_n^2 = count_fraction * mu^2``,
  ``mu_s^2 = (1 - count_fraction) * mu^2`` (default ``count_fraction = 0.1``: a count needs far less
  precision than a D-dimensional sum), ``count_floor = 1`` by default.
- ``metric="cosine"`` (default): ``W[:, k] = S~_k / ||S~_k||``, ``b = 0``. Cosine assignment is
  invariant to each prototype's scale, so the class means' directions are the normalised sums and
  the counts are not needed: nothing is spent on them and ``mu_s = mu``.

Unlike the single step, whose weights are the class sums ``n_k m_k`` (so large classes win ties),
both assignments ignore the class sizes: robust to class imbalance. The head is blind to the
feature covariance (see ``dp_least_squares`` for that).
Options (``config.method_options``): ``metric``, ``count_fraction``, ``count_floor``,
``chunk_rows``.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from private_head.methods import read_options, register_method
from private_head.psd import DEFAULT_CHUNK_ROWS, class_sums_and_counts

METRICS = ("cosine", "euclidean")
DEFAULTS = {
    "metric": "cosine",
    "count_fraction": 0.1,
    "count_floor": 1.0,
    "chunk_rows": DEFAULT_CHUNK_ROWS,
}


def prototype_head(
    data: Any,
    key: jax.Array,
    *,
    metric: str,
    sums_noise_std: float,
    counts_noise_std: float,
    count_floor: float = 1.0,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> tuple[jax.Array, jax.Array]:
    """``(W [D, K], b [K])`` from the class sums (and counts) plus noise of the given stds (no
    accounting here: ``train`` charges the ledger first)."""
    sums, counts = class_sums_and_counts(data, chunk_rows=chunk_rows)
    key_sums, key_counts = jax.random.split(key)
    sums = sums + sums_noise_std * jax.random.normal(key_sums, sums.shape, jnp.float32)
    if metric == "cosine":
        norms = jnp.linalg.norm(sums, axis=1, keepdims=True)
        return (sums / jnp.maximum(norms, 1e-30)).T, jnp.zeros(data.num_classes, jnp.float32)
    counts = counts + counts_noise_std * jax.random.normal(key_counts, counts.shape, jnp.float32)
    means = sums / jnp.maximum(counts, count_floor)[:, None]
    return 2.0 * means.T, -jnp.sum(means * means, axis=1)


@register_method("dp_prototypes")
def train(data: Any, config: Any, ledger: Any, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Charge the class sums (and, for Euclidean, the counts), then build the head."""
    opts = read_options(config, DEFAULTS, "dp_prototypes")
    metric, fraction, floor = opts["metric"], opts["count_fraction"], opts["count_floor"]
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if not 0 < fraction < 1:
        raise ValueError(f"count_fraction must lie in (0, 1), got {fraction}")
    if not floor > 0:
        raise ValueError(f"count_floor must be > 0, got {floor}")
    mu = ledger.remaining_mu
    if mu is None or not mu > 0:
        raise ValueError(f"dp_prototypes needs a positive GDP budget left, got mu={mu}")
    r = data.feature_norm
    counts_std = 0.0
    if metric == "cosine":
        sums_std = r / mu
    else:
        sums_std = r / (math.sqrt(1.0 - fraction) * mu)
        counts_std = 1.0 / (math.sqrt(fraction) * mu)
    ledger.record_gaussian("dp_prototypes/class_sums", sensitivity=r, noise_std=sums_std)
    if metric == "euclidean":
        ledger.record_gaussian("dp_prototypes/class_counts", sensitivity=1.0, noise_std=counts_std)
    return prototype_head(
        data,
        key,
        metric=metric,
        sums_noise_std=sums_std,
        counts_noise_std=counts_std,
        count_floor=float(floor),
        chunk_rows=int(opts["chunk_rows"]),
    )
