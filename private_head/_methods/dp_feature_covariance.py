"""``dp_feature_covariance`` (DP-FC): one noisy feature covariance, then preconditioned DP-GD.

Following Mehta et al. 2023, with rows bounded to ``||x_i|| <= r``, the allowance mu split as
``mu_cov^2 = covariance_fraction mu^2`` and ``mu_gd^2 = mu^2 - mu_cov^2``:

1. Release ``G~ = X^T X + s (U + U^T) / 2`` (sensitivity r^2, ``s = r^2 / mu_cov``; see
   ``dp_least_squares``).
2. Post-processing of ``G~`` only: ``M = psd_project(G~) / n`` (n: the public divisor) and the
   noise edge ``e = sqrt(2 D) s / n``, the Gram noise's spectral norm in units of M (public: it
   depends on D, n and mu only). Eigenvalues of M below e are indistinguishable from the noise's:
   they are raised to ``noise_floor e``, so the preconditioner ``P = (max(M, noise_floor e) +
   lambda I)^{-1}`` (``lambda = ridge_scale e``, or the option ``ridge``) is flat on the
   noise-dominated subspace rather than a random distortion of it; ``A = a P^{1/2}`` with ``a^2 =
   tr(M) / tr(P M)``, so the transformed rows keep about their mean squared norm. When no
   eigenvalue of M reaches ``structure_threshold e`` the Gram shows no structure above its
   noise and ``A = I`` (DP-FC is then ``dp_gd`` with the rest of the budget). Pure noise's top
   eigenvalue sits at e, so the default threshold 1.5 keeps A = I for (near-)isotropic
   features at small budgets, where whitening by the noise cost 2-4 points on cifar10-like, and
   whitens wherever real directions stand clear of the noise (digits, anisotropic features).
3. ``dp_gd`` on the rows ``x' = A x`` (``Rows.mapped``) with ``mu_gd``: per-example gradients are
   clipped to C in the transformed space, each of the T steps releases a sum of sensitivity C,
   ``sigma = sqrt(T) / mu_gd``. A is a function of the released G~ alone, so this is DP-GD on a
   fixed public map of the data, and the whole is exactly GDP with ``mu^2 = mu_cov^2 + T /
   sigma^2`` (adaptive composition).
4. The head is ``W = A W'``, ``b = b'``: gradient descent preconditioned by ``a^2 (M + lambda
   I)^{-1}`` on the original rows, with the clipping and the noise applied in the whitened space.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from private_head._budget import Allowance
from private_head._linalg import whitening
from private_head._method import Context, Fitted, Method, PublicInfo
from private_head._methods._descent import DescentOptions, descend, descent_settings, fitted
from private_head._methods.dp_least_squares import gram_sensitivity, noise_spectral_norm
from private_head._optimizers import DescentSettings
from private_head._options import option
from private_head._plan import Plan, PlannedRelease
from private_head._preprocessing import IDENTITY
from private_head._registry import register_method
from private_head._release import Releaser
from private_head._rows import Rows
from private_head._settings import Settings
from private_head._statistics import Gram
from private_head._validation import (
    check_fraction,
    check_gram_memory,
    check_non_negative,
    check_positive,
)

GRAM, STEPS = "dp_feature_covariance/gram", "dp_feature_covariance/clipped_gradient_sums"


@dataclass(frozen=True, kw_only=True)
class FeatureCovarianceOptions(DescentOptions):
    """The covariance release, then ``dp_gd``'s options for the preconditioned steps."""

    covariance_fraction: float | None = option(
        None, "share of mu^2 for the Gram X^T X", shown="the rule"
    )
    noise_floor: float = option(
        0.35, "eigenvalues of X^T X / n are raised to at least noise_floor x the noise edge"
    )
    ridge_scale: float = option(0.01, "ridge = ridge_scale x the noise edge (spectral norm / n)")
    ridge: float | None = option(None, "the ridge in units of X^T X / n (overrides ridge_scale)")
    structure_threshold: float = option(
        1.5, "whiten only if the top eigenvalue exceeds this x the noise edge (else A = I)"
    )

    def validate(self) -> None:
        super().validate()
        if self.covariance_fraction is not None:
            check_fraction("covariance_fraction", self.covariance_fraction)
        check_positive("ridge_scale", self.ridge_scale)
        check_positive("ridge", self.ridge)
        check_non_negative("noise_floor", self.noise_floor)
        check_non_negative("structure_threshold", self.structure_threshold)


@dataclass(frozen=True)
class CovarianceSettings(Settings):
    """The Gram's share of mu^2, the whitening's public constants (ridge, noise edge, floor,
    structure threshold; module docstring) and the preconditioned descent's settings."""

    covariance_fraction: float
    ridge: float
    edge: float
    floor: float
    threshold: float
    descent: DescentSettings

    @property
    def whitening_line(self) -> float:
        """The smallest top eigenvalue of ``M = X^T X / n`` whose noisy estimate reaches the
        structure test's ``threshold x edge`` (module docstring, step 2): with symmetric Gaussian
        noise of spectral edge e, a top eigenvalue ``lambda > e / 2`` of M shows in the noisy
        Gram at about ``lambda + e^2 / (4 lambda)`` (the spiked Wigner matrix's BBP shift), so the
        run whitens from ``lambda = e (t + sqrt(t^2 - 1)) / 2`` on (t the threshold); for ``t <=
        1`` the noise alone reaches the test, and the line is 0."""
        t = self.threshold
        if t <= 1:
            return 0.0
        return self.edge * (t + math.sqrt(t * t - 1.0)) / 2.0


def covariance_fraction(dim: int, n: float, mu: float) -> float:
    """The rule: ``clip(0.25 / sqrt(g), 0.05, 0.4)`` with ``g = D^1.5 / (n mu)``, the Gram
    noise's spectral norm over the mean eigenvalue of X^T X (up to constants): more of the budget
    for the covariance where it can be estimated, less where the noise would swamp it."""
    if math.isinf(mu):
        return 0.4
    g = dim**1.5 / (n * mu)
    return float(min(0.4, max(0.05, 0.25 / math.sqrt(g))))


def plan(
    options: FeatureCovarianceOptions, public: PublicInfo, allowance: Allowance
) -> Plan[CovarianceSettings]:
    fraction = options.covariance_fraction
    if fraction is None:
        fraction = covariance_fraction(public.dim, public.dataset_size, allowance.mu)
    parts = allowance.split({"covariance": fraction}, rest="descent")
    descent = descent_settings(
        options, public.num_classes, public.dataset_size, allowance.mu, public.dim
    )
    sensitivity = gram_sensitivity(public.feature_norm, False)
    gram_std = parts["covariance"].gaussian_std(sensitivity)
    C, T = descent.clip_norm, descent.steps
    edge = noise_spectral_norm(gram_std, public.dim) / public.dataset_size
    ridge = options.ridge if options.ridge is not None else options.ridge_scale * edge
    releases = (
        PlannedRelease.gaussian(GRAM, sensitivity, gram_std, symmetric=True),
        PlannedRelease.gaussian(STEPS, C, parts["descent"].gaussian_std(C, count=T), count=T),
    )
    settings = CovarianceSettings(
        covariance_fraction=float(fraction),
        ridge=float(ridge),
        edge=float(edge),
        floor=float(options.noise_floor),
        threshold=float(options.structure_threshold),
        descent=descent,
    )
    return Plan(releases, settings)


def run(plan: Plan[CovarianceSettings], rows: Rows, releaser: Releaser, context: Context) -> Fitted:
    n, s = context.public.dataset_size, plan.settings
    check_gram_memory(rows.dim, rows.budget, "dp_feature_covariance")
    # under auto, the exact Gram its feature spread kept on the rows (``Rows.sum(keep=True)``)
    gram = releaser.release(GRAM, rows.sum(Gram(), None, context.preprocessing))
    transform = whitening(gram, n, s.ridge, s.edge, s.floor, s.threshold)
    whitened = rows.mapped(transform, context.preprocessing)
    head = fitted(descend(whitened, IDENTITY, s.descent, releaser, STEPS, n), s.descent)
    W = jnp.matmul(transform, head.weights, precision=jax.lax.Precision.HIGHEST)
    return Fitted(W, head.bias)


METHOD = register_method(
    Method(
        "dp_feature_covariance",
        FeatureCovarianceOptions,
        plan,
        run,
        "a noisy feature covariance, then DP-GD preconditioned by it (Mehta et al. 2023)",
    )
)
