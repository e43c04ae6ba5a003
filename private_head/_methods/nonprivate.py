"""``nonprivate``: the same zero-initialised linear head with no clipping and no noise.

The ceiling in comparisons (``epsilon = inf``; nothing is charged, the report says ``private:
false``). It minimises the mean loss over the rows (softmax cross-entropy, or one-vs-all logistic
with the fixed initial bias) plus ``weight_decay / 2 ||W||^2``:

- ``steps=None`` (default): to convergence with scipy's L-BFGS-B, at most ``max_steps``
  iterations, stopping when the gradient's max norm falls below ``tol``; every evaluation is one
  ``Rows.sum`` pass, so it runs on streamed rows too;
- ``steps=T``: exactly T full-batch steps of ``optimizer`` at ``learning_rate``, the non-private
  twin of ``dp_gd``.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
import optax
import scipy.optimize

from private_head._budget import Allowance
from private_head._method import Context, Fitted, Method, PublicInfo
from private_head._methods._descent import LossOptions
from private_head._optimizers import OPTIMIZERS, DescentSettings, make_optimizer
from private_head._options import option
from private_head._plan import Plan
from private_head._registry import register_method
from private_head._release import Releaser
from private_head._rows import Rows
from private_head._statistics import LossAndGradient
from private_head._validation import check_count, check_positive


@dataclass(frozen=True, kw_only=True)
class NonprivateOptions(LossOptions):
    """The loss (shared with the private gradient methods), the optimiser and its stopping
    rule."""

    weight_decay: float = option(0.0, "L2 penalty weight_decay / 2 ||W||^2")
    steps: int | None = option(None, "T fixed steps of optimizer", shown="L-BFGS to convergence")
    optimizer: str = option("sgd", "optimiser of the fixed steps", choices=OPTIMIZERS)
    learning_rate: float = option(1.0, "step size of the fixed steps")
    momentum: float = option(0.9, "momentum of optimizer='momentum'")
    max_steps: int = option(500, "L-BFGS iteration limit")
    tol: float = option(1e-6, "L-BFGS tolerance on the gradient's max norm")

    def validate(self) -> None:
        super().validate()
        check_positive("learning_rate", self.learning_rate)
        check_positive("tol", self.tol)
        check_count("steps", self.steps)
        check_count("max_steps", self.max_steps)
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")


def plan(
    options: NonprivateOptions, public: PublicInfo, allowance: Allowance
) -> Plan[NonprivateOptions]:
    del public, allowance
    return Plan((), options)


class _Objective:
    """Mean loss + decay and its gradient over the rows, as float64 for scipy."""

    def __init__(self, rows: Rows, context: Context, options: NonprivateOptions):
        self.rows, self.pre, self.options = rows, context.preprocessing, options
        self.D, self.K = rows.dim, rows.num_classes
        self.n = float(rows.global_rows)  # the true N: the ceiling is not private
        self.b0 = options.initial_bias(self.K)
        self.stat = LossAndGradient(self.K, options.loss)

    def split(self, theta: np.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        W = theta[: self.D * self.K].reshape(self.D, self.K)
        b = theta[self.D * self.K :] if self.options.train_bias else np.full(self.K, self.b0)
        return jnp.asarray(W, jnp.float32), jnp.asarray(b, jnp.float32)

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        W, b = self.split(theta)
        loss, gW, gb = self.rows.sum(self.stat, (W, b), self.pre)
        wd = self.options.weight_decay
        W64 = np.asarray(W, np.float64)
        value = float(loss) / self.n + 0.5 * wd * float(np.sum(W64 * W64))
        grad = [np.asarray(gW, np.float64).ravel() / self.n + wd * W64.ravel()]
        if self.options.train_bias:
            grad.append(np.asarray(gb, np.float64) / self.n)
        return value, np.concatenate(grad)


def run(plan: Plan[NonprivateOptions], rows: Rows, releaser: Releaser, context: Context) -> Fitted:
    del releaser
    options = plan.settings
    objective = _Objective(rows, context, options)
    size = objective.D * objective.K + (objective.K if options.train_bias else 0)
    theta = np.zeros(size)
    if options.train_bias:
        theta[objective.D * objective.K :] = objective.b0
    if options.steps is None:
        result = scipy.optimize.minimize(
            objective,
            theta,
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": options.max_steps, "gtol": options.tol},
        )
        return Fitted(*objective.split(result.x))
    settings = DescentSettings(
        objective.K,
        options.steps,
        1.0,
        options.loss,
        options.train_bias,
        objective.b0,
        options.optimizer,
        options.learning_rate,
        options.momentum,
        0.0,
    )
    opt = make_optimizer(settings)
    params = {"theta": jnp.asarray(theta, jnp.float32)}  # the decay is in the objective
    state = opt.init(params)
    for _ in range(options.steps):
        _, grad = objective(np.asarray(params["theta"], np.float64))
        updates, state = opt.update({"theta": jnp.asarray(grad, jnp.float32)}, state, params)
        params = optax.apply_updates(params, updates)
    return Fitted(*objective.split(np.asarray(params["theta"], np.float64)))


METHOD = register_method(
    Method(
        "nonprivate",
        NonprivateOptions,
        plan,
        run,
        "the ceiling: no clipping, no noise (epsilon=inf; nothing is private)",
        private=False,
    )
)
