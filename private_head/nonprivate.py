"""The ``nonprivate`` method: the same zero-initialised linear head with no clipping and no noise.

It is the ceiling in comparisons (``epsilon = inf``; nothing is charged to the ledger). The loss is
the mean over rows of the head's loss (softmax cross-entropy, or one-vs-all logistic with the fixed
initial bias when ``loss="sigmoid"``) plus ``weight_decay / 2 * ||W||^2``:

- ``steps == 1`` (the default): minimised to convergence with L-BFGS (optax, zoom line search), at
  most ``method_options["max_steps"]`` (default 500) iterations, stopping when the gradient norm
  falls below ``method_options["tol"]`` (default 1e-6). Needs the features in memory.
- ``steps = T > 1``: exactly T full-batch steps of ``config.optimizer`` at ``config.learning_rate``,
  the non-private twin of ``dp_gd``; streamed (out-of-core) data is summed chunk by chunk.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from private_head.config import FitConfig
from private_head.data import TrainData
from private_head.methods import read_options, register_method

Params = tuple[jax.Array, jax.Array]


def head_loss_sum(
    params: Params, x: jax.Array, y: jax.Array, num_classes: int, loss: str
) -> jax.Array:
    """Sum over rows of the head's loss at logits ``x W + b`` (float32)."""
    w, b = params
    logits = jnp.asarray(x, jnp.float32) @ w + b
    onehot = jax.nn.one_hot(y, num_classes, dtype=jnp.float32)
    if loss == "softmax":
        return optax.softmax_cross_entropy(logits, onehot).sum()
    return optax.sigmoid_binary_cross_entropy(logits, onehot).sum()


def _objective(data: TrainData, config: FitConfig) -> Callable[[Params], jax.Array]:
    """Mean loss plus weight decay on the in-memory features (bias frozen unless train_bias)."""
    x, y, n = data.features, data.labels, data.num_rows

    def value(params: Params) -> jax.Array:
        w, b = params
        b = b if config.train_bias else jax.lax.stop_gradient(b)
        total = head_loss_sum((w, b), x, y, data.num_classes, config.loss) / n
        return total + 0.5 * config.weight_decay * jnp.sum(w * w)

    return value


def _chunked_grad(data: TrainData, config: FitConfig) -> Callable[[Params], Params]:
    """Gradient of the same objective, summed over streamed chunks (one jitted chunk gradient)."""
    chunk_grad = jax.jit(jax.grad(head_loss_sum), static_argnums=(3, 4))

    def grad(params: Params) -> Params:
        gw, gb = jnp.zeros_like(params[0]), jnp.zeros_like(params[1])
        for x, y in data.iter_chunks():
            dw, db = chunk_grad(params, x, y, data.num_classes, config.loss)
            gw, gb = gw + dw, gb + db
        gw = gw / data.num_rows + config.weight_decay * params[0]
        return gw, (gb / data.num_rows if config.train_bias else jnp.zeros_like(gb))

    return grad


def _optimizer(config: FitConfig) -> optax.GradientTransformation:
    lr = config.learning_rate
    return {
        "sgd": lambda: optax.sgd(lr),
        "momentum": lambda: optax.sgd(lr, momentum=config.momentum),
        "adam": lambda: optax.adam(lr),
        "lamb": lambda: optax.lamb(lr),
    }[config.optimizer]()


def _fixed_steps(data: TrainData, config: FitConfig, params: Params) -> Params:
    opt = _optimizer(config)
    if data.features is None:
        grad = _chunked_grad(data, config)
        state = opt.init(params)
        for _ in range(config.steps):
            updates, state = opt.update(grad(params), state, params)
            params = optax.apply_updates(params, updates)
        return params
    grad = jax.grad(_objective(data, config))

    @jax.jit
    def run(params: Params) -> Params:
        def step(carry: tuple[Params, Any], _: None) -> tuple[tuple[Params, Any], None]:
            params, state = carry
            updates, state = opt.update(grad(params), state, params)
            return (optax.apply_updates(params, updates), state), None

        (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), length=config.steps)
        return params

    return run(params)


def _converge(data: TrainData, config: FitConfig, params: Params) -> Params:
    if data.features is None:
        raise ValueError(
            "nonprivate with steps=1 runs L-BFGS to convergence and needs the "
            "features in memory; raise max_device_bytes, or pass steps=T > 1 for T "
            "streamed full-batch steps"
        )
    max_steps = int(config.method_options.get("max_steps", 500))
    tol = float(config.method_options.get("tol", 1e-6))
    value = _objective(data, config)
    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(value)

    @jax.jit
    def run(params: Params) -> Params:
        def step(carry: tuple[Params, Any, jax.Array]) -> tuple[Params, Any, jax.Array]:
            params, state, i = carry
            val, grad = value_and_grad(params, state=state)
            updates, state = opt.update(grad, state, params, value=val, grad=grad, value_fn=value)
            return optax.apply_updates(params, updates), state, i + 1

        def going(carry: tuple[Params, Any, jax.Array]) -> jax.Array:
            _, state, i = carry
            grad = optax.tree_utils.tree_get(state, "grad")
            return (i == 0) | ((i < max_steps) & (optax.tree_utils.tree_norm(grad) >= tol))

        params, _, _ = jax.lax.while_loop(going, step, (params, opt.init(params), 0))
        return params

    return run(params)


@register_method("nonprivate")
def train(data: TrainData, config: FitConfig, ledger: Any, key: jax.Array) -> Params:
    """Fit the head without privacy (module docstring); ``ledger`` and ``key`` are unused."""
    del ledger, key
    read_options(config, {"max_steps": None, "tol": None}, "nonprivate")
    params = (
        jnp.zeros((data.dim, data.num_classes), jnp.float32),
        jnp.full((data.num_classes,), config.initial_bias(data.num_classes), jnp.float32),
    )
    if config.steps == 1:
        return _converge(data, config, params)
    return _fixed_steps(data, config, params)
