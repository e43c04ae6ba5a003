"""``dp_gd``: T full-batch noisy clipped gradient steps from W = 0, with an optax optimiser.

Step t (t = 0..T-1) releases the clipped gradient sum plus noise and updates with the mean over
the public N:

    g_t = (sum_i clip_C(grad_i(W_t)) + N(0, (sigma C)^2 I)) / N,    W_{t+1} = opt(W_t, g_t),

with ``sigma = sqrt(T) / ledger.remaining_mu`` (T releases of sensitivity C are exactly
sqrt(T)/sigma-GDP), charged to the ledger before the loop. The noise of step t is drawn on the
device from ``fold_in(key, t)``. In-memory rows run the whole loop as one ``lax.scan`` in one jit
(rows sharded over all devices when there are several); streamed rows accumulate each step's sum
chunk by chunk (``streaming``) and apply the same noisy update, so both give the same head.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax

from private_head.config import FitConfig
from private_head.data import TrainData
from private_head.kernel import clipped_gradient_sum, gaussian_noise_like, row_sq_norms
from private_head.methods import read_options, register_method
from private_head.noise import charge_full_batch
from private_head.optimizers import head_bias, init_params, make_optimizer
from private_head.sharding import device_rows
from private_head.streaming import chunk_rows, streamed_sum

Params = dict[str, jax.Array]


def gradient_sums(params: Params, bias: jax.Array, X, y, mask, config: FitConfig,
                  sq_norms: jax.Array | None = None) -> Params:
    """The clipped gradient sums for the trained parameters (``"b"`` only when it is trained)."""
    gW, gb = clipped_gradient_sum(params["W"], bias, X, y, config.clip_norm, loss=config.loss,
                                  train_bias=config.train_bias, mask=mask, sq_norms=sq_norms)
    return {"W": gW, "b": gb} if "b" in params else {"W": gW}


def noisy_update(opt: optax.GradientTransformation, params: Params, opt_state: Any, sums: Params,
                 key: jax.Array, noise_std: jax.Array, num_rows: int) -> tuple[Params, Any]:
    """Add N(0, noise_std^2) to every sum, divide by the public ``num_rows``, take one step."""
    noise = gaussian_noise_like(key, sums, noise_std)
    grads = jax.tree_util.tree_map(lambda s, n: (s + n) / num_rows, sums, noise)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


def _in_memory(data: TrainData, config: FitConfig, key: jax.Array, noise_std: float) -> Params:
    rows = device_rows(data.features, data.labels)
    opt = make_optimizer(config)
    params = init_params(data.dim, data.num_classes, config)
    K, N = data.num_classes, data.num_rows

    @jax.jit
    def run(params, X, y, mask, key, noise_std):
        sq_norms = row_sq_norms(X)  # once for all T steps

        def step(carry, t):
            params, opt_state = carry
            sums = gradient_sums(params, head_bias(params, K, config), X, y, mask, config,
                                 sq_norms)
            return noisy_update(opt, params, opt_state, sums, jax.random.fold_in(key, t),
                                noise_std, N), None

        (params, _), _ = jax.lax.scan(step, (params, opt.init(params)),
                                      jnp.arange(config.steps))
        return params

    return run(params, rows.X, rows.y, rows.mask, key, noise_std)


def _streamed(data: TrainData, config: FitConfig, key: jax.Array, noise_std: float) -> Params:
    opt = make_optimizer(config)
    params = init_params(data.dim, data.num_classes, config)
    opt_state = opt.init(params)
    update = jax.jit(functools.partial(noisy_update, opt), static_argnames="num_rows")
    rows = chunk_rows(data, config.max_device_bytes)
    for t in range(config.steps):
        bias = head_bias(params, data.num_classes, config)
        sums = streamed_sum(
            data, lambda X, y, m, p=params, b=bias: gradient_sums(p, b, X, y, m, config), rows)
        params, opt_state = update(params, opt_state, sums, jax.random.fold_in(key, t),
                                   noise_std, num_rows=data.num_rows)
    return params


@register_method("dp_gd")
def train(data: TrainData, config: FitConfig, ledger: Any,
          key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """T noisy full-batch steps (module docstring); returns ``(W [D, K], b [K])``."""
    read_options(config, {}, "dp_gd")
    noise_std = charge_full_batch(ledger, "dp_gd: clipped gradient sums", config.clip_norm,
                                  config.steps)
    run = _streamed if data.features is None else _in_memory
    params = run(data, config, key, noise_std)
    return params["W"], head_bias(params, data.num_classes, config)
