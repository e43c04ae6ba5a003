"""``dp_least_squares``: ridge regression on one-hot targets by sufficient-statistics perturbation.

Following Mehta et al. 2023 ("Differentially private image classification from features"), with
rows ``x_i`` preprocessed to ``||x_i|| <= r`` (``r = data.feature_norm``) and one-hot targets
``y_i``, two Gaussian releases are made (``X~ = [X, 1]`` when ``config.train_bias``, so that the
last row of the solution is the bias and ``r^2`` becomes ``r^2 + 1`` below):

    G~ = X~^T X~ + E,   E symmetric, upper triangle (diagonal included) iid N(0, (r^2 / mu_1)^2)
    S~ = X~^T Y + F,    F iid N(0, (r / mu_2)^2)
    W  = (psd_project(G~) + lambda I)^{-1} S~          (one eigendecomposition, on device)

Sensitivities under add/remove one example: adding ``x`` moves ``X^T X`` by ``x x^T``. The
released vector is the upper triangle of the Gram matrix (the lower triangle is a copy, i.e.
post-processing); its change has L2 norm ``sqrt(sum_{j<=l} x_j^2 x_l^2)
= sqrt((||x||^4 + sum_j x_j^4) / 2) <= ||x x^T||_F = ||x||^2 <= r^2`` (equality for
``x = r e_j``), so ``sensitivity r^2`` is tight. ``X^T Y`` moves by ``x y^T`` with
``||x y^T||_F = ||x|| ||y|| = ||x|| <= r``.

Budget split (data-independent): ``mu_1^2 = gram_fraction * mu^2`` and ``mu_2^2 = (1 -
gram_fraction) * mu^2`` with ``mu = ledger.remaining_mu``; composed, ``sqrt(mu_1^2 + mu_2^2) = mu``.
Default ``gram_fraction = 0.5``.

Ridge (data-independent): the symmetric noise E has spectral norm about ``2 s sqrt(D')``
(s = r^2 / mu_1, Wigner semicircle), so by default ``lambda = ridge_scale * s * sqrt(D')`` with
``ridge_scale = 1``; ``ridge`` sets lambda directly (must be > 0).
Options (``config.method_options``): ``gram_fraction``, ``ridge``, ``ridge_scale``, ``chunk_rows``.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from private_head.methods import read_options, register_method
from private_head.psd import (
    DEFAULT_CHUNK_ROWS,
    gram_and_class_sums,
    psd_ridge_solve,
    symmetric_gaussian_noise,
)

DEFAULTS = {
    "gram_fraction": 0.5,
    "ridge": None,
    "ridge_scale": 1.0,
    "chunk_rows": DEFAULT_CHUNK_ROWS,
}


def gram_sensitivity(feature_norm: float, append_one: bool) -> float:
    """L2 sensitivity of the upper triangle of ``X~^T X~``: ``r^2 (+ 1 with the constant)``."""
    return feature_norm**2 + (1.0 if append_one else 0.0)


def least_squares_head(
    data: Any,
    key: jax.Array,
    *,
    gram_noise_std: float,
    sums_noise_std: float,
    ridge: float,
    append_one: bool,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> tuple[jax.Array, jax.Array]:
    """``(W [D, K], b [K])`` from the statistics plus noise of the given stds (no accounting here:
    ``train`` charges the ledger first). ``b`` is the last row of the solution when
    ``append_one``, else zeros."""
    gram, sums = gram_and_class_sums(data, append_one=append_one, chunk_rows=chunk_rows)
    key_gram, key_sums = jax.random.split(key)
    gram = gram + symmetric_gaussian_noise(key_gram, gram.shape[0], gram_noise_std)
    sums = sums + sums_noise_std * jax.random.normal(key_sums, sums.shape, jnp.float32)
    solution = psd_ridge_solve(gram, sums, ridge)
    if append_one:
        return solution[:-1], solution[-1]
    return solution, jnp.zeros(data.num_classes, jnp.float32)


def default_ridge(noise_std: float, dim: int, ridge_scale: float) -> float:
    """``ridge_scale * noise_std * sqrt(dim)``: proportional to the Gram noise's spectral norm."""
    return ridge_scale * noise_std * math.sqrt(dim)


@register_method("dp_least_squares")
def train(data: Any, config: Any, ledger: Any, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Charge the two releases (module docstring), then solve the noisy ridge system."""
    opts = read_options(config, DEFAULTS, "dp_least_squares")
    fraction = opts["gram_fraction"]
    if not 0 < fraction < 1:
        raise ValueError(f"gram_fraction must lie in (0, 1), got {fraction}")
    append_one = bool(config.train_bias)
    dim = data.dim + int(append_one)
    mu = ledger.remaining_mu
    if mu is None or not mu > 0:
        raise ValueError(f"dp_least_squares needs a positive GDP budget left, got mu={mu}")
    gram_sens = gram_sensitivity(data.feature_norm, append_one)
    sums_sens = math.sqrt(gram_sens)
    gram_std = gram_sens / (math.sqrt(fraction) * mu)
    sums_std = sums_sens / (math.sqrt(1.0 - fraction) * mu)
    ridge = opts["ridge"]
    if ridge is None:
        ridge = default_ridge(gram_std, dim, opts["ridge_scale"])
    if not ridge > 0:
        raise ValueError(f"ridge must be > 0, got {ridge}")
    ledger.record_gaussian("dp_least_squares/gram", sensitivity=gram_sens, noise_std=gram_std)
    ledger.record_gaussian("dp_least_squares/xty", sensitivity=sums_sens, noise_std=sums_std)
    return least_squares_head(
        data,
        key,
        gram_noise_std=gram_std,
        sums_noise_std=sums_std,
        ridge=float(ridge),
        append_one=append_one,
        chunk_rows=int(opts["chunk_rows"]),
    )
