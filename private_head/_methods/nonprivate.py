"""``nonprivate``: the ceiling. Regularised logistic regression on the preprocessed rows, solved
to a real tolerance, its weight decay chosen by cross-validation on the training rows.

Nothing is charged (``epsilon = inf``; the report says ``private: false``). It minimises, over the
rows ``x'_i`` as the private heads see them (the same preprocessing, fused into the same pass,
``Rows.preprocessed``),

    L(W, b) = (1/N) sum_i loss(W^T x'_i + b, y_i) + (weight_decay / 2) ||W||_F^2

(softmax cross-entropy, or one-vs-all logistic; the bias is trained and unpenalised by default,
as scikit-learn's intercept: ``weight_decay = 1 / (C N)`` for its ``C``):

- ``weight_decay=None`` (default): chosen by ``folds``-fold cross-validation on the training rows
  (non-private, so free) over ``DECAY_GRID`` (half decades, 1e-1 .. 1e-9). Stratified folds
  from a fixed seed, ten by default: with five the choice hung on the fold seed (measured on
  cifar10-like@0.2: 1e-4 or 3.16e-5 by seed, their accuracies level over five seeds), and ten
  fit each fold on 90% of the rows, nearer the N of the final head. Each decay is scored by its
  mean held-out accuracy (exact: counted, then averaged as fractions), ties broken by the lower
  mean held-out log-loss, then the larger decay;
  the head is the fit on all rows at the chosen decay. Each fit runs the grid from the strongest
  decay down, warm-started from the previous solution (a regularisation path), and the grid
  stops once it is ``PATIENCE`` decades (a factor 100) below the best decay so far;
- the solver: L-BFGS (optax, its zoom line search, compiled as one loop on the device) on the
  materialised preprocessed rows, until the gradient's largest entry is at most ``tolerance``,
  the iterate stops moving, or ``max_iterations``;
- rows that do not fit the memory budget (twice their float32 size) are never materialised: the
  head is fitted by scipy's L-BFGS-B with one streamed ``Rows.sum`` pass per evaluation, at
  ``weight_decay`` or, when that is None, at ``FALLBACK_C``'s decay ``1 / N`` (scikit-learn's
  default), and the report says that no cross-validation ran and why;
- ``steps=T``: exactly T full-batch steps of ``optimizer`` at ``learning_rate`` (decay
  ``weight_decay`` or 0), the non-private twin of ``dp_gd``.

The report's ``nonprivate`` entry records the decay used, how it was chosen, the grid and its
cross-validation scores, and the final fit's iterations and gradient (the ceiling is not private:
these are functions of the rows; only the streamed fit's decay ``1 / N`` is a function of their
count alone).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import jax
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

# The cross-validated decays (of the mean loss), strongest first: half decades 10^(-k/2),
# 1e-1 .. 1e-9, so that the cross-validation resolves a factor sqrt(10), not 10. Near-separable
# embeddings choose the small end (measured: ScatterNet features of MNIST), raw pixels the middle.
DECAY_GRID = tuple(10.0 ** (-k / 2) for k in range(2, 19))
FALLBACK_C = 1.0  # the decay 1 / (C N) when no cross-validation runs: scikit-learn's default
FOLD_SEED = 0  # public: the folds depend on the labels' order only
PATIENCE = 2.0  # decades: the grid stops once the decay is this far below the best so far
_HIGHEST = jax.lax.Precision.HIGHEST


@dataclass(frozen=True, kw_only=True)
class NonprivateOptions(LossOptions):
    """The loss, the weight decay and its cross-validation, the solver's stopping rule, and the
    fixed-step alternative."""

    train_bias: bool = option(True, "train the bias (unpenalised, as scikit-learn's intercept)")
    weight_decay: float | None = option(
        None,
        "L2 penalty weight_decay / 2 ||W||^2 on the mean loss (scikit-learn's 1 / (C N))",
        shown="cross-validated",
    )
    folds: int = option(10, "K of the K-fold cross-validation of weight_decay on the training rows")
    max_iterations: int = option(1000, "L-BFGS iteration limit of each fit")
    tolerance: float = option(1e-6, "L-BFGS stops when the gradient's largest entry is below this")
    steps: int | None = option(
        None, "T fixed steps of optimizer instead of L-BFGS", shown="L-BFGS to convergence"
    )
    optimizer: str = option("sgd", "optimiser of the fixed steps", choices=OPTIMIZERS)
    learning_rate: float = option(1.0, "step size of the fixed steps")
    momentum: float = option(0.9, "momentum of optimizer='momentum'")

    def validate(self) -> None:
        super().validate()
        check_positive("learning_rate", self.learning_rate)
        check_positive("tolerance", self.tolerance)
        check_count("steps", self.steps)
        check_count("max_iterations", self.max_iterations)
        if self.folds < 2:
            raise ValueError(f"folds must be an integer >= 2, got {self.folds!r}")
        if self.weight_decay is not None and not 0 <= self.weight_decay < math.inf:
            raise ValueError(f"weight_decay must be a finite number >= 0, got {self.weight_decay}")


def plan(
    options: NonprivateOptions, public: PublicInfo, allowance: Allowance
) -> Plan[NonprivateOptions]:
    del public, allowance
    return Plan((), options)


# ------------------------------------------------------------------ the compiled solver
# P problems on the same rows at once (the K folds and the fit on all rows): W [D, P, K] and
# b [P, K], row weights [P, N] (1: a training row of that problem, 0: held out). Their objective is
# the sum of the problems' own, which are independent, so its optimum is each one's optimum and its
# gradient is theirs side by side; each iteration reads the rows once for all problems (a fit is
# bound by reading X: D x PK is a narrow matrix).
def _logits(W, b, x):
    D, P, K = W.shape
    return (jnp.dot(x, W.reshape(D, P * K), precision=_HIGHEST).reshape(-1, P, K) + b).transpose(
        1, 0, 2
    )  # [P, N, K]


def _mean_losses(z, onehot, weights, loss: str) -> jax.Array:
    """[P]: each problem's weighted mean loss."""
    if loss == "softmax":
        per_row = -jnp.sum(onehot * jax.nn.log_softmax(z), axis=2)
    else:
        per_row = jnp.sum(jnp.logaddexp(0.0, z) - onehot * z, axis=2)
    return jnp.sum(weights * per_row, axis=1) / jnp.sum(weights, axis=1)


def _objective(params, bias0, x, onehot, weights, decay, loss: str):
    W = params["W"]
    b = params.get("b", bias0)
    losses = _mean_losses(_logits(W, b, x), onehot, weights, loss)
    return jnp.sum(losses) + 0.5 * decay * jnp.sum(W * W)


def _max_abs(tree) -> jax.Array:
    return jnp.max(jnp.stack([jnp.max(jnp.abs(leaf)) for leaf in jax.tree_util.tree_leaves(tree)]))


@functools.partial(jax.jit, static_argnames=("loss", "max_iterations"))
def _solve(params, bias0, x, onehot, weights, decay, tolerance, *, loss, max_iterations):
    """L-BFGS from ``params`` (module docstring): ``(params, iterations, max |gradient|)``."""

    def f(p):
        return _objective(p, bias0, x, onehot, weights, decay, loss)

    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(f)

    def cond(carry):
        _, _, it, gmax, moved = carry
        return (it < max_iterations) & (gmax > tolerance) & moved

    def body(carry):
        p, state, it, _, _ = carry
        value, grad = value_and_grad(p, state=state)
        updates, state = opt.update(grad, state, p, value=value, grad=grad, value_fn=f)
        new = optax.apply_updates(p, updates)
        # the zoom line search keeps the gradient at the accepted point: no extra pass
        gmax = _max_abs(optax.tree_utils.tree_get(state, "grad"))
        moved = _max_abs(updates) > 0  # float32 resolution reached: nothing left to gain
        return new, state, it + 1, gmax, moved

    gmax0 = _max_abs(jax.grad(f)(params))
    carry = (params, opt.init(params), jnp.int32(0), gmax0, jnp.bool_(True))
    p, _, it, gmax, _ = jax.lax.while_loop(cond, body, carry)
    return p, it, gmax


@functools.partial(jax.jit, static_argnames=("loss",))
def _scores(params, bias0, x, y, onehot, weights, *, loss):
    """[P] counts of correct predictions (int32, exact) and [P] mean log-losses over each
    problem's rows of weight 1."""
    z = _logits(params["W"], params.get("b", bias0), x)
    correct = (jnp.argmax(z, axis=2) == y[None, :]) & (weights > 0)
    return jnp.sum(correct, axis=1, dtype=jnp.int32), _mean_losses(z, onehot, weights, loss)


def choose(scores: list[tuple[Fraction, float, float]]) -> int:
    """The index of the chosen ``(mean held-out accuracy, mean held-out log-loss, decay)``: the
    highest accuracy, ties to the lower log-loss, then to the larger decay."""
    return max(range(len(scores)), key=lambda i: (scores[i][0], -scores[i][1], scores[i][2]))


def stratified_folds(labels: np.ndarray, folds: int, seed: int = FOLD_SEED) -> np.ndarray:
    """The fold of each row: each class's rows shuffled (a fixed seed) and dealt in turn."""
    rng = np.random.default_rng(seed)
    out = np.empty(len(labels), np.int64)
    start = 0
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        out[idx] = (start + np.arange(len(idx))) % folds
        start += len(idx)
    return out


class _Solver:
    """The compiled fits on materialised rows ``x`` [N, D] (module docstring)."""

    def __init__(self, x: jax.Array, labels: np.ndarray, K: int, options: NonprivateOptions):
        self.x, self.labels, self.options = x, labels, options
        self.y = jnp.asarray(labels, jnp.int32)
        self.onehot = jax.nn.one_hot(self.y, K, dtype=jnp.float32)[None]
        self.bias0 = jnp.full(K, options.initial_bias(K), jnp.float32)
        self.D, self.K = int(x.shape[1]), K

    def zero(self, problems: int) -> dict[str, jax.Array]:
        params = {"W": jnp.zeros((self.D, problems, self.K), jnp.float32)}
        if self.options.train_bias:
            params["b"] = jnp.tile(self.bias0, (problems, 1))
        return params

    def fit(self, params, decay: float, weights: jax.Array) -> tuple[dict, int, float]:
        p, it, gmax = _solve(
            params,
            self.bias0,
            self.x,
            self.onehot,
            weights,
            jnp.float32(decay),
            jnp.float32(self.options.tolerance),
            loss=self.options.loss,
            max_iterations=self.options.max_iterations,
        )
        return p, int(it), float(gmax)

    def head(self, params, problem: int) -> tuple[jax.Array, jax.Array]:
        b = params["b"][problem] if "b" in params else self.bias0
        return params["W"][:, problem], b

    def fixed(self, decay: float) -> tuple[tuple[jax.Array, jax.Array], int, float]:
        """The head on all rows at ``decay``."""
        weights = jnp.ones((1, len(self.labels)), jnp.float32)
        params, iterations, gmax = self.fit(self.zero(1), decay, weights)
        return self.head(params, 0), iterations, gmax

    def cross_validate(self) -> tuple[tuple, int, float, dict[str, Any]]:
        """The head at the cross-validated decay, and the scores behind it (module docstring).

        The K folds and the fit on all rows are solved together (one problem each) along the
        grid from the strongest decay down, each warm-started from its previous solution; the
        grid stops once it is ``PATIENCE`` decades below the best decay so far (the weak end
        costs the most iterations and, past the best, overfits)."""
        folds = self.options.folds
        fold_of = stratified_folds(self.labels, folds)
        held_out = np.arange(folds)[:, None] == fold_of[None, :]
        fold_rows = [int(n) for n in held_out.sum(axis=1)]
        train = jnp.asarray(np.vstack([~held_out, np.ones(len(fold_of), bool)]), jnp.float32)
        test = jnp.asarray(held_out, jnp.float32)
        params = self.zero(folds + 1)
        scores, heads = [], []
        for decay in DECAY_GRID:
            params, iterations, gmax = self.fit(params, decay, train)
            correct, nll = _scores(
                jax.tree_util.tree_map(
                    lambda a: a[:, :folds] if a.ndim == 3 else a[:folds], params
                ),
                self.bias0,
                self.x,
                self.y,
                self.onehot,
                test,
                loss=self.options.loss,
            )
            accuracy = sum(map(Fraction, np.asarray(correct).tolist(), fold_rows)) / folds
            heads.append((self.head(params, folds), iterations, gmax))
            scores.append((accuracy, float(np.mean(np.asarray(nll, np.float64))), decay))
            if math.log10(scores[choose(scores)][2] / decay) >= PATIENCE - 1e-9:
                break
        best = choose(scores)
        head, iterations, gmax = heads[best]
        return (
            head,
            iterations,
            gmax,
            {
                "weight_decay": scores[best][2],
                "selection": f"{folds}-fold cross-validation on the training rows",
                "grid": [decay for _, _, decay in scores],
                "cv_accuracy": [round(float(a), 6) for a, _, _ in scores],
                "cv_log_loss": [round(v, 6) for _, v, _ in scores],
            },
        )


# ------------------------------------------------------------------ streamed rows
class _Objective:
    """Mean loss + decay and its gradient over the rows (one ``Rows.sum`` pass), float64 for
    scipy."""

    def __init__(self, rows: Rows, context: Context, options: NonprivateOptions, decay: float):
        self.rows, self.pre, self.options, self.decay = rows, context.preprocessing, options, decay
        self.D, self.K = rows.dim, rows.num_classes
        self.n = float(rows.global_rows)  # the true N: the ceiling is not private
        self.b0 = options.initial_bias(self.K)
        self.stat = LossAndGradient(self.K, options.loss)

    def split(self, theta: np.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        W = theta[: self.D * self.K].reshape(self.D, self.K)
        b = theta[self.D * self.K :] if self.options.train_bias else np.full(self.K, self.b0)
        return jnp.asarray(W, jnp.float32), jnp.asarray(b, jnp.float32)

    def start(self) -> np.ndarray:
        theta = np.zeros(self.D * self.K + (self.K if self.options.train_bias else 0))
        theta[self.D * self.K :] = self.b0
        return theta

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        W, b = self.split(theta)
        loss, gW, gb = self.rows.sum(self.stat, (W, b), self.pre)
        W64 = np.asarray(W, np.float64)
        value = float(loss) / self.n + 0.5 * self.decay * float(np.sum(W64 * W64))
        grad = [np.asarray(gW, np.float64).ravel() / self.n + self.decay * W64.ravel()]
        if self.options.train_bias:
            grad.append(np.asarray(gb, np.float64) / self.n)
        return value, np.concatenate(grad)


def _streamed(rows: Rows, context: Context, options: NonprivateOptions, note: str) -> Fitted:
    """scipy's L-BFGS-B over streamed passes at a fixed decay (module docstring)."""
    fixed = options.weight_decay is not None
    decay = options.weight_decay if fixed else 1.0 / (FALLBACK_C * rows.global_rows)
    objective = _Objective(rows, context, options, decay)
    result = scipy.optimize.minimize(
        objective,
        objective.start(),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": options.max_iterations, "gtol": options.tolerance},
    )
    gmax = float(np.max(np.abs(result.jac))) if result.jac is not None else None
    report = {
        "weight_decay": decay,
        "selection": "given" if fixed else f"fixed at 1 / (C N), C = {FALLBACK_C:g}: {note}",
        "solver": "scipy L-BFGS-B on streamed rows",
        "iterations": int(result.nit),
        "gradient_max": gmax,
    }
    return Fitted(*objective.split(result.x), {"nonprivate": report})


def _fixed_steps(rows: Rows, context: Context, options: NonprivateOptions) -> Fitted:
    decay = options.weight_decay or 0.0
    objective = _Objective(rows, context, options, decay)
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
    params = {"theta": jnp.asarray(objective.start(), jnp.float32)}  # decay: in the objective
    state = opt.init(params)
    for _ in range(options.steps):
        _, grad = objective(np.asarray(params["theta"], np.float64))
        updates, state = opt.update({"theta": jnp.asarray(grad, jnp.float32)}, state, params)
        params = optax.apply_updates(params, updates)
    report = {"weight_decay": decay, "selection": "given", "solver": f"{options.steps} steps"}
    return Fitted(*objective.split(np.asarray(params["theta"], np.float64)), {"nonprivate": report})


def run(plan: Plan[NonprivateOptions], rows: Rows, releaser: Releaser, context: Context) -> Fitted:
    del releaser
    options = plan.settings
    if options.steps is not None:
        return _fixed_steps(rows, context, options)
    x = rows.preprocessed(context.preprocessing)
    if x is None:
        return _streamed(rows, context, options, "the rows do not fit the memory budget")
    solver = _Solver(x, rows.labels, rows.num_classes, options)
    if options.weight_decay is not None:
        (W, b), iterations, gmax = solver.fixed(options.weight_decay)
        report = {"weight_decay": options.weight_decay, "selection": "given"}
    elif len(rows.labels) < options.folds:
        return _streamed(rows, context, options, f"fewer rows than folds ({options.folds})")
    else:
        (W, b), iterations, gmax, report = solver.cross_validate()
    report.update(
        solver="L-BFGS (optax) on the preprocessed rows",
        iterations=iterations,
        gradient_max=gmax,
        converged=gmax <= options.tolerance,
    )
    return Fitted(W, b, {"nonprivate": report})


METHOD = register_method(
    Method(
        "nonprivate",
        NonprivateOptions,
        plan,
        run,
        "the ceiling: logistic regression to convergence, weight decay cross-validated "
        "(epsilon=inf; nothing is private)",
        private=False,
    )
)
