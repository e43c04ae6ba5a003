"""What the gradient methods share: the loss options, the clip norm, the descent options and their
default rule, and the noisy full-batch descent loop (``dp_gd``, and DP-FC's inner loop).

The descent loop from ``W = 0`` (bias fixed at ``b0`` unless trained), for t = 0..T-1:

    g_t = Releaser.release(clipped gradient sum at W_t)          (+ N(0, (sigma C)^2 I))
    W_{t+1} = opt(W_t, g_t / n)                                   (n: the public divisor)

Step 0 uses the zero-init kernel (no forward matmul). Each step's sum is one ``Rows.sum`` pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax.numpy as jnp

from private_head._kernel import LOSSES
from private_head._method import Fitted
from private_head._optimizers import (
    OPTIMIZERS,
    DescentSettings,
    apply_step,
    head_bias,
    init_params,
    init_state,
)
from private_head._options import Options, option
from private_head._preprocessing import Preprocessing
from private_head._release import Releaser
from private_head._rows import Rows
from private_head._statistics import GradientSums, ZeroInitSums
from private_head._validation import check_count, check_positive


@dataclass(frozen=True, kw_only=True)
class LossOptions(Options):
    """The head's loss and its bias (every gradient method and the non-private ceiling)."""

    loss: str = option("softmax", "softmax cross-entropy, or one-vs-all sigmoid", choices=LOSSES)
    train_bias: bool = option(
        False, "train the bias (a private method releases it); default: fixed at its start"
    )
    sigmoid_bias: float | None = option(
        None, "initial bias of the sigmoid loss (default -log(K - 1): every class at 1/K)"
    )

    def validate(self) -> None:
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
class ClippedLossOptions(LossOptions):
    """The loss of a private gradient method and its per-example gradient bound."""

    clip_norm: float | None = option(
        None, "C: each example's gradient is clipped to this L2 norm", shown="the rule"
    )

    def validate(self) -> None:
        super().validate()
        check_positive("clip_norm", self.clip_norm)

    def clip(self, rule: float) -> float:
        """``clip_norm``, or the method's ``rule`` (``SINGLE_STEP_CLIP``, ``RULE_CLIP``)."""
        return float(self.clip_norm if self.clip_norm is not None else rule)


@dataclass(frozen=True, kw_only=True)
class DescentOptions(ClippedLossOptions):
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
        check_count("steps", self.steps)
        check_positive("learning_rate", self.learning_rate)
        if not 0 <= self.momentum < 1 or self.weight_decay < 0:
            raise ValueError(
                f"need 0 <= momentum < 1 and weight_decay >= 0, got {self.momentum}, "
                f"{self.weight_decay}"
            )


# The clip norm of the single step: at W = 0 no unit row's gradient (norm sqrt(1 - 1/K)) is
# clipped, so the step is the exact class sums (docs/architecture.md, "Default settings").
SINGLE_STEP_CLIP = 1.0
# The default rule of the full-batch descent (docs/architecture.md, "Default settings").
RULE_CLIP = 0.1  # C
RULE_MOMENTUM_OPTIMIZER = "momentum"  # heavy ball, beta = options.momentum (0.9)
RULE_RATE = 0.2  # tau = RULE_RATE * n * mu ...
RULE_TIME_CAP = 400.0  # ... at most this "training time" lr * C * T ...
RULE_TIME_CAP_PER_DIM = 0.5  # ... or D / 2 where that is larger (a wide head trains longer)
RULE_MAX_STEPS = 110
ADAPTIVE_LR = 0.05  # adam / lamb: a step size per coordinate, not derived from tau


def time_cap(dim: int) -> float:
    """``max(400, D / 2)``: the rule's largest training time (docs/architecture.md, "Default
    settings"). A wider head has more directions to fit before the noise dominates: on the
    ScatterNet features (D = 3969) the larger cap buys 0.3-0.5 points at epsilon 8, while every
    feature set of the suite with D <= 800 keeps the cap of 400 that was best there."""
    return max(RULE_TIME_CAP, RULE_TIME_CAP_PER_DIM * dim)


def training_time(n: float, mu: float, dim: int) -> float:
    """``tau = min(max(400, D / 2), max(1, 0.2 n mu))``: the rule's ``lr C T``. The noise of
    the head after T momentum steps from zero is about ``lr C T / ((1 - beta) n mu) = 10 tau /
    (n mu)`` per logit on unit-norm rows; tau keeps it near 2 until the cap (``time_cap``), so
    the budget buys a longer training until then and less noise after."""
    if math.isinf(mu):
        return time_cap(dim)
    return float(min(time_cap(dim), max(1.0, RULE_RATE * n * mu)))


def descent_defaults(
    options: DescentOptions, n: float, mu: float, dim: int
) -> tuple[int, str, float, float]:
    """``(T, optimizer, learning rate, C)``: the given values, else the rule: C = 0.1, momentum,
    ``T = min(110, ceil(tau))`` and ``lr = tau / (T C)`` (``training_time``; plain SGD takes
    ``1 / (1 - beta)`` times that, the momentum's effective step; adam and lamb 0.05)."""
    tau = training_time(n, mu, dim)
    clip = options.clip(RULE_CLIP)
    steps = options.steps
    if steps is None:
        steps = int(min(RULE_MAX_STEPS, max(1, math.ceil(tau))))
    optimizer = options.optimizer if options.optimizer is not None else RULE_MOMENTUM_OPTIMIZER
    lr = options.learning_rate
    if lr is None:
        lr = tau / (steps * clip)
        if optimizer == "sgd":
            lr /= 1.0 - options.momentum
        elif optimizer in ("adam", "lamb"):
            lr = ADAPTIVE_LR
    return int(steps), optimizer, float(lr), float(clip)


def descent_settings(
    options: DescentOptions, num_classes: int, n: float, mu: float, dim: int
) -> DescentSettings:
    """The loop's settings for ``num_classes`` classes, the public divisor ``n``, the GDP ``mu``
    the loop may spend and the feature dimension ``dim`` (the rule's inputs)."""
    steps, optimizer, lr, clip = descent_defaults(options, n, mu, dim)
    return DescentSettings(
        num_classes=int(num_classes),
        steps=steps,
        clip_norm=clip,
        loss=options.loss,
        train_bias=bool(options.train_bias),
        bias0=float(options.initial_bias(num_classes)),
        optimizer=optimizer,
        learning_rate=lr,
        momentum=float(options.momentum),
        weight_decay=float(options.weight_decay),
    )


def zero_init_sums(rows: Rows, pre: Preprocessing, settings: DescentSettings) -> dict:
    """The clipped gradient sums at the zero-initialised head (one pass, no forward matmul)."""
    stat = ZeroInitSums(settings.num_classes, settings.loss, settings.train_bias, settings.bias0)
    return rows.sum(stat, settings.clip_norm, pre)


def descend(
    rows: Rows,
    pre: Preprocessing,
    settings: DescentSettings,
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


def fitted(params: dict, settings: DescentSettings) -> Fitted:
    """The head of the descent's parameters (the bias fixed at ``bias0`` unless trained)."""
    return Fitted(params["W"], head_bias(params, settings).astype(jnp.float32))
