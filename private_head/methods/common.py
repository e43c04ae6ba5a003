"""What the gradient methods share: the loss options, the descent options and their default rule,
and the noisy full-batch descent loop (``dp_gd``, and DP-FC's inner loop).

The descent loop from ``W = 0`` (bias fixed at ``b0`` unless trained), for t = 0..T-1:

    g_t = Releaser.release(clipped gradient sum at W_t)          (+ N(0, (sigma C)^2 I))
    W_{t+1} = opt(W_t, g_t / n)                                   (n: the public divisor)

Step 0 uses the zero-init kernel (no forward matmul). Each step's sum is one ``Rows.sum`` pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax.numpy as jnp

from private_head.kernel import LOSSES
from private_head.optimizers import (
    OPTIMIZERS,
    Descent,
    apply_step,
    head_bias,
    init_params,
    init_state,
)
from private_head.options import Options, option, positive
from private_head.plan import Releaser
from private_head.preprocessing import Preprocessing
from private_head.rows import Rows
from private_head.statistics import GradientSums, ZeroInitSums


@dataclass(frozen=True, kw_only=True)
class LossOptions(Options):
    """The head's loss and the per-example gradient bound."""

    clip_norm: float = option(1.0, "C: each example's gradient is clipped to this L2 norm")
    loss: str = option("softmax", "softmax cross-entropy, or one-vs-all sigmoid", choices=LOSSES)
    train_bias: bool = option(False, "train (and release) the bias; default: fixed at its start")
    sigmoid_bias: float | None = option(
        None, "initial bias of the sigmoid loss (default -log(K - 1): every class at 1/K)"
    )

    def validate(self) -> None:
        positive("clip_norm", self.clip_norm)
        if self.sigmoid_bias is not None and self.loss != "sigmoid":
            raise ValueError("sigmoid_bias applies only to loss='sigmoid'")

    def initial_bias(self, num_classes: int) -> float:
        """0 for softmax; ``sigmoid_bias`` or ``-log(K - 1)`` for the sigmoid loss."""
        if self.loss == "softmax":
            return 0.0
        if self.sigmoid_bias is not None:
            return float(self.sigmoid_bias)
        return -math.log(max(num_classes - 1, 1))


@dataclass(frozen=True, kw_only=True)
class DescentOptions(LossOptions):
    """A few full-batch steps; None means the default rule (``descent_defaults``)."""

    steps: int | None = option(None, "T, the number of full-batch steps", shown="the rule")
    optimizer: str | None = option(
        None, "sgd, momentum, adam or lamb", choices=OPTIMIZERS, shown="the rule"
    )
    learning_rate: float | None = option(None, "step size", shown="the rule")
    momentum: float = option(0.9, "heavy-ball momentum of optimizer='momentum'")
    weight_decay: float = option(0.0, "L2 decay of W (post-processing, free)")

    def validate(self) -> None:
        super().validate()
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be a positive integer, got {self.steps}")
        positive("learning_rate", self.learning_rate)
        if not 0 <= self.momentum < 1 or self.weight_decay < 0:
            raise ValueError(
                f"need 0 <= momentum < 1 and weight_decay >= 0, got {self.momentum}, "
                f"{self.weight_decay}"
            )


# The default rule for the full-batch descent (docs/architecture.md, "Default settings").
RECIPE_STEPS, RECIPE_LR, RECIPE_MOMENTUM = 110, 1.0, 0.9


def descent_defaults(options: DescentOptions) -> tuple[int, str, float]:
    """``(T, optimizer, learning rate)``: the given values, else the default rule."""
    steps = options.steps if options.steps is not None else RECIPE_STEPS
    optimizer = options.optimizer if options.optimizer is not None else "momentum"
    lr = options.learning_rate if options.learning_rate is not None else RECIPE_LR
    return steps, optimizer, lr


def descent_settings(options: DescentOptions, num_classes: int) -> Descent:
    steps, optimizer, lr = descent_defaults(options)
    return Descent(
        num_classes=int(num_classes),
        steps=int(steps),
        clip_norm=float(options.clip_norm),
        loss=options.loss,
        train_bias=bool(options.train_bias),
        bias0=float(options.initial_bias(num_classes)),
        optimizer=optimizer,
        learning_rate=float(lr),
        momentum=float(options.momentum),
        weight_decay=float(options.weight_decay),
    )


def zero_init_sums(rows: Rows, pre: Preprocessing, settings: Descent) -> dict:
    """The clipped gradient sums at the zero-initialised head (one pass, no forward matmul)."""
    stat = ZeroInitSums(settings.num_classes, settings.loss, settings.train_bias, settings.bias0)
    return rows.sum(stat, settings.clip_norm, pre)


def descend(
    rows: Rows,
    pre: Preprocessing,
    settings: Descent,
    releaser: Releaser,
    release: str,
    divisor: float,
) -> dict:
    """The noisy descent loop of the module docstring; returns the parameters."""
    params = init_params(rows.dim, settings)
    state = init_state(params, settings=settings)
    stat = GradientSums(settings.loss, settings.train_bias)
    for t in range(settings.steps):
        if t == 0:
            sums = zero_init_sums(rows, pre, settings)
        else:
            bias = head_bias(params, settings)
            sums = rows.sum(stat, (params, bias, settings.clip_norm), pre)
        noisy = releaser.release(release, sums)
        params, state = apply_step(params, state, noisy, divisor, settings=settings)
    return params


def head_from(params: dict, settings: Descent) -> tuple:
    return params["W"], head_bias(params, settings).astype(jnp.float32)
