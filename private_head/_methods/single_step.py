"""``single_step`` (the default of ``fit``): one full-batch noisy step from W = 0.

At W = 0 every example predicts the same ``p0`` (uniform for softmax, ``sigmoid(b0)`` for the
one-vs-all loss), so the clipped gradient sum is a combination of clipped class sums of X
(``_kernel.zero_init_class_sums``: no forward matmul, X read once). The head is

    W = -(G + N(0, (sigma C)^2 I)) / n,      sigma = 1 / mu,

with n the public divisor; the bias stays at its initial value unless ``train_bias`` (then it
takes the same step from its own noisy sum). Predictions ``argmax_k x^T W_k + b0`` do not depend on
the scale of W: the method has no learning rate. It equals ``dp_gd`` with T = 1 and plain SGD at
learning rate 1; its clip norm's rule is ``SINGLE_STEP_CLIP`` (1: no unit row is clipped).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp

from private_head._budget import Allowance
from private_head._method import Context, Fitted, Method, PublicInfo
from private_head._methods._descent import SINGLE_STEP_CLIP, ClippedLossOptions, zero_init_sums
from private_head._optimizers import DescentSettings
from private_head._plan import Plan, PlannedRelease
from private_head._registry import register_method
from private_head._release import Releaser
from private_head._rows import Rows

RELEASE = "single_step/clipped_gradient_sum"


@dataclass(frozen=True, kw_only=True)
class SingleStepOptions(ClippedLossOptions):
    """The loss and the clip norm; nothing else to choose."""


def settings_of(options: SingleStepOptions, num_classes: int) -> DescentSettings:
    """One step of plain SGD at learning rate 1 (the head is ``-released / n``)."""
    return DescentSettings(
        num_classes,
        1,
        options.clip(SINGLE_STEP_CLIP),
        options.loss,
        options.train_bias,
        options.initial_bias(num_classes),
        "sgd",
        1.0,
        0.0,
        0.0,
    )


def plan(
    options: SingleStepOptions, public: PublicInfo, allowance: Allowance
) -> Plan[DescentSettings]:
    settings = settings_of(options, public.num_classes)
    C = settings.clip_norm
    return Plan((PlannedRelease.gaussian(RELEASE, C, allowance.gaussian_std(C)),), settings)


def run(plan: Plan[DescentSettings], rows: Rows, releaser: Releaser, context: Context) -> Fitted:
    settings = plan.settings
    noisy = releaser.release(RELEASE, zero_init_sums(rows, context.preprocessing, settings))
    n = context.public.dataset_size
    W = -noisy["W"] / n
    bias = jnp.full(settings.num_classes, settings.bias0, jnp.float32)
    if settings.train_bias:
        bias = bias - noisy["b"] / n
    return Fitted(W, bias)


METHOD = register_method(
    Method(
        "single_step",
        SingleStepOptions,
        plan,
        run,
        "one full-batch noisy step from zero: the noisy clipped class sums",
    )
)
