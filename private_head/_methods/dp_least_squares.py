"""``dp_least_squares``: ridge regression on one-hot targets by sufficient-statistics perturbation.

Following Mehta et al. 2023 ("Differentially private image classification from features"), with
rows bounded to ``||x_i|| <= r`` and one-hot targets ``y_i``, two Gaussian releases are made
(``X~ = [X, 1]`` when ``train_bias``, so the last row of the solution is the bias and ``r^2``
becomes ``r^2 + 1`` below):

    G~ = X~^T X~ + s (U + U^T) / 2,   U iid N(0, 1) [D', D'],   s = r^2 / mu_1
    S~ = X~^T Y + F,                  F iid N(0, (r / mu_2)^2)
    W  = (psd_project(G~) + lambda I)^{-1} S~          (one eigendecomposition, on device)

Sensitivities under add/remove one example: adding ``x`` moves ``X^T X`` by ``x x^T``, of
Frobenius norm ``||x||^2 <= r^2``. Releasing the whole matrix with iid N(0, s^2) noise on every
entry has sensitivity r^2 with ``mu_1 = r^2 / s``; its symmetric part ``(Z + Z^T) / 2`` is
post-processing and has exactly the noise above: std s on the diagonal and ``s / sqrt(2)`` off it
(``_release.symmetric_noise``). (Noising only the upper triangle with std s, also of sensitivity
``<= r^2``, puts std s on every entry: twice the off-diagonal noise variance for the same mu.)
``X^T Y`` moves by ``x y^T`` with ``||x y^T||_F = ||x|| <= r``.

Budget split (data-independent): ``mu_1^2 = gram_fraction mu^2``, ``mu_2^2 = (1 - gram_fraction)
mu^2``. Ridge (data-independent): the noise's spectral norm is about ``sqrt(2 D') s`` (a Wigner
matrix with off-diagonal std ``s / sqrt(2)``), and ``lambda = ridge_scale sqrt(2 D') s``; or
``ridge`` sets lambda directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax.numpy as jnp

from private_head._budget import Allowance
from private_head._linalg import psd_ridge_solve
from private_head._method import Context, Fitted, Method, PublicInfo
from private_head._options import Options, option
from private_head._plan import Plan, PlannedRelease
from private_head._registry import register_method
from private_head._release import Releaser
from private_head._rows import Rows
from private_head._settings import Settings
from private_head._statistics import GramAndSums
from private_head._validation import check_fraction, check_gram_memory, check_positive

GRAM, SUMS = "dp_least_squares/gram", "dp_least_squares/xty"


@dataclass(frozen=True, kw_only=True)
class LeastSquaresOptions(Options):
    """Budget split and ridge of the noisy normal equations."""

    gram_fraction: float = option(0.2, "share of mu^2 for the Gram X^T X (the rest: X^T Y)")
    ridge_scale: float = option(0.5, "ridge = ridge_scale x the Gram noise's spectral norm")
    ridge: float | None = option(None, "the ridge lambda itself (overrides ridge_scale)")
    train_bias: bool = option(False, "append a constant feature (its weight is the bias)")

    def validate(self) -> None:
        check_fraction("gram_fraction", self.gram_fraction)
        check_positive("ridge_scale", self.ridge_scale)
        check_positive("ridge", self.ridge)


@dataclass(frozen=True)
class LeastSquaresSettings(Settings):
    """Whether the constant feature is appended, and the ridge lambda."""

    train_bias: bool
    ridge: float


def noise_spectral_norm(std: float, dim: int) -> float:
    """``sqrt(2 D) s``: the spectral norm of ``s (U + U^T) / 2`` for large D."""
    return math.sqrt(2.0 * dim) * std


def gram_sensitivity(feature_norm: float, append_one: bool) -> float:
    """``r^2`` (+ 1 with the constant feature): the Frobenius norm of one row's ``x x^T``."""
    return feature_norm**2 + (1.0 if append_one else 0.0)


def plan(
    options: LeastSquaresOptions, public: PublicInfo, allowance: Allowance
) -> Plan[LeastSquaresSettings]:
    parts = allowance.split({"gram": options.gram_fraction}, rest="sums")
    gram_sens = gram_sensitivity(public.feature_norm, options.train_bias)
    sums_sens = math.sqrt(gram_sens)
    gram_std = parts["gram"].gaussian_std(gram_sens)
    sums_std = parts["sums"].gaussian_std(sums_sens)
    dim = public.dim + int(options.train_bias)
    ridge = options.ridge
    if ridge is None:
        ridge = options.ridge_scale * noise_spectral_norm(gram_std, dim)
    releases = (
        PlannedRelease.gaussian(GRAM, gram_sens, gram_std, symmetric=True),
        PlannedRelease.gaussian(SUMS, sums_sens, sums_std),
    )
    return Plan(releases, LeastSquaresSettings(bool(options.train_bias), float(ridge)))


def run(
    plan: Plan[LeastSquaresSettings], rows: Rows, releaser: Releaser, context: Context
) -> Fitted:
    train_bias = plan.settings.train_bias
    check_gram_memory(rows.dim + int(train_bias), rows.budget, "dp_least_squares")
    statistic = GramAndSums(rows.num_classes, train_bias)
    gram, sums = rows.sum(statistic, None, context.preprocessing)
    gram = releaser.release(GRAM, gram)
    sums = releaser.release(SUMS, sums)
    solution = psd_ridge_solve(gram, sums, plan.settings.ridge)
    if train_bias:
        return Fitted(solution[:-1], solution[-1])
    return Fitted(solution, jnp.zeros(rows.num_classes, jnp.float32))


METHOD = register_method(
    Method(
        "dp_least_squares",
        LeastSquaresOptions,
        plan,
        run,
        "ridge regression from a noisy Gram X^T X and noisy X^T Y (Mehta et al. 2023)",
    )
)
