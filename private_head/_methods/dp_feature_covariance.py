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

from private_head._budget import Allowance, check_fraction
from private_head._linalg import check_gram_memory, whitening
from private_head._methods import Context, Method, PublicInfo, register_method
from private_head._methods._descent import DescentOptions, descend, descent_settings, head_from
from private_head._methods.dp_least_squares import gram_sensitivity, noise_spectral_norm
from private_head._options import non_negative, option, positive
from private_head._plan import Plan, PlannedRelease, Releaser
from private_head._preprocessing import IDENTITY
from private_head._rows import Rows
from private_head._statistics import Gram

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
        positive("ridge_scale", self.ridge_scale)
        positive("ridge", self.ridge)
        non_negative("noise_floor", self.noise_floor)
        non_negative("structure_threshold", self.structure_threshold)


def covariance_fraction(dim: int, n: float, mu: float) -> float:
    """The rule: ``clip(0.25 / sqrt(g), 0.05, 0.4)`` with ``g = D^1.5 / (n mu)``, the Gram
    noise's spectral norm over the mean eigenvalue of X^T X (up to constants): more of the budget
    for the covariance where it can be estimated, less where the noise would swamp it."""
    if math.isinf(mu):
        return 0.4
    g = dim**1.5 / (n * mu)
    return float(min(0.4, max(0.05, 0.25 / math.sqrt(g))))


def plan(options: FeatureCovarianceOptions, public: PublicInfo, allowance: Allowance) -> Plan:
    fraction = options.covariance_fraction
    if fraction is None:
        fraction = covariance_fraction(public.dim, public.dataset_size, allowance.mu)
    parts = allowance.split({"covariance": fraction}, rest="descent")
    settings = descent_settings(options, public.num_classes, public.dataset_size, allowance.mu)
    sensitivity = gram_sensitivity(public.feature_norm, False)
    gram_std = parts["covariance"].gaussian_std(sensitivity)
    C, T = settings.clip_norm, settings.steps
    edge = noise_spectral_norm(gram_std, public.dim) / public.dataset_size
    ridge = options.ridge if options.ridge is not None else options.ridge_scale * edge
    releases = (
        PlannedRelease(GRAM, sensitivity, gram_std, symmetric=True),
        PlannedRelease(STEPS, C, parts["descent"].gaussian_std(C, count=T), count=T),
    )
    notes = {
        "ridge": float(ridge),
        "edge": float(edge),
        "floor": float(options.noise_floor),
        "threshold": float(options.structure_threshold),
        "covariance_fraction": fraction,
    }
    return Plan(releases, settings, notes)


def run(plan: Plan, rows: Rows, releaser: Releaser, context: Context):
    n = context.public.dataset_size
    check_gram_memory(rows.dim, rows.budget, "dp_feature_covariance")
    gram = releaser.release(GRAM, rows.sum(Gram(), None, context.preprocessing))
    notes = plan.notes
    transform = whitening(
        gram, n, notes["ridge"], notes["edge"], notes["floor"], notes["threshold"]
    )
    whitened = rows.mapped(transform, context.preprocessing)
    params = descend(whitened, IDENTITY, plan.settings, releaser, STEPS, n)
    W, bias = head_from(params, plan.settings)
    return jnp.matmul(transform, W, precision=jax.lax.Precision.HIGHEST), bias


METHOD = register_method(
    Method(
        "dp_feature_covariance",
        FeatureCovarianceOptions,
        plan,
        run,
        "a noisy feature covariance, then DP-GD preconditioned by it (Mehta et al. 2023)",
    )
)
