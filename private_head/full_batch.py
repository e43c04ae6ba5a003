"""``dp_gd``: T full-batch noisy clipped gradient steps from W = 0, with an optax optimiser.

Step t (t = 0..T-1) releases the clipped gradient sum plus noise and updates with the mean over
the public N:

    g_t = (sum_i clip_C(grad_i(W_t)) + N(0, (sigma C)^2 I)) / N,    W_{t+1} = opt(W_t, g_t),

with ``sigma = sqrt(T) / ledger.remaining_mu`` (T releases of sensitivity C are exactly
sqrt(T)/sigma-GDP), charged to the ledger before the loop. The noise of step t is drawn on the
device from ``fold_in(key, t)``. In-memory rows run the whole loop as one ``lax.scan`` in one jit
(rows sharded over all devices when there are several); streamed rows accumulate each step's sum
chunk by chunk (``streaming``) and apply the same noisy update, so both give the same head. Both
jits live at module level with the settings (``LoopSettings``) static and the noise std and keys
traced, so later fits with the same settings and shapes reuse the compiled code.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from private_head.config import FitConfig
from private_head.data import TrainData
from private_head.kernel import clipped_gradient_sum, gaussian_noise_like, row_sq_norms
from private_head.methods import read_options, register_method
from private_head.noise import charge_full_batch
from private_head.optimizers import LoopSettings, Settings, head_bias, init_params, make_optimizer
from private_head.sharding import device_rows
from private_head.streaming import chunk_rows, streamed_sum

Params = dict[str, jax.Array]


def gradient_sums(
    params: Params, bias: jax.Array, X, y, mask, config: Settings, sq_norms: jax.Array | None = None
) -> Params:
    """The clipped gradient sums for the trained parameters (``"b"`` only when it is trained)."""
    gW, gb = clipped_gradient_sum(
        params["W"],
        bias,
        X,
        y,
        config.clip_norm,
        loss=config.loss,
        train_bias=config.train_bias,
        mask=mask,
        sq_norms=sq_norms,
    )
    return {"W": gW, "b": gb} if "b" in params else {"W": gW}


def noisy_update(
    opt: optax.GradientTransformation,
    params: Params,
    opt_state: Any,
    sums: Params,
    key: jax.Array,
    noise_std: jax.Array,
    num_rows: int,
) -> tuple[Params, Any]:
    """Add N(0, noise_std^2) to every sum, divide by the public ``num_rows``, take one step."""
    noise = gaussian_noise_like(key, sums, noise_std)
    grads = jax.tree_util.tree_map(lambda s, n: (s + n) / num_rows, sums, noise)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


def kernels() -> tuple[Callable, ...]:
    """This module's kernels as the compiled loops trace them (looked up now, in the globals).

    The loops take them as a static argument only to key their compile cache on them: a kernel
    replaced at run time (the audit tests plant broken ones) is then traced anew, never served
    from a loop compiled with the old one.
    """
    return clipped_gradient_sum, gaussian_noise_like


@functools.partial(jax.jit, static_argnames=("settings", "num_rows", "kernels"))
def noisy_step(
    params: Params,
    opt_state: Any,
    sums: Params,
    key: jax.Array,
    noise_std: jax.Array,
    *,
    settings: LoopSettings,
    num_rows: int,
    kernels: tuple[Callable, ...],
) -> tuple[Params, Any]:
    """``noisy_update`` with the optimiser of ``settings``, compiled once per settings/shapes."""
    del kernels  # a cache key only (see ``kernels()``)
    return noisy_update(make_optimizer(settings), params, opt_state, sums, key, noise_std, num_rows)


@functools.partial(jax.jit, static_argnames=("settings", "num_rows", "kernels"))
def run_in_memory(
    params: Params,
    X: jax.Array,
    y: jax.Array,
    mask: jax.Array | None,
    key: jax.Array,
    noise_std: jax.Array,
    *,
    settings: LoopSettings,
    num_rows: int,
    kernels: tuple[Callable, ...],
) -> Params:
    """All T steps as one ``lax.scan`` (module docstring), compiled once per settings/shapes."""
    del kernels  # a cache key only (see ``kernels()``)
    opt = make_optimizer(settings)
    K = settings.num_classes
    sq_norms = row_sq_norms(X)  # once for all T steps

    def step(carry, t):
        params, opt_state = carry
        sums = gradient_sums(params, head_bias(params, K, settings), X, y, mask, settings, sq_norms)
        return noisy_update(
            opt, params, opt_state, sums, jax.random.fold_in(key, t), noise_std, num_rows
        ), None

    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), jnp.arange(settings.steps))
    return params


def _in_memory(data: TrainData, settings: LoopSettings, key: jax.Array, noise_std: float) -> Params:
    rows = device_rows(data.features, data.labels)
    params = init_params(data.dim, data.num_classes, settings)
    return run_in_memory(
        params,
        rows.X,
        rows.y,
        rows.mask,
        key,
        noise_std,
        settings=settings,
        num_rows=data.num_rows,
        kernels=kernels(),
    )


def _streamed(
    data: TrainData,
    settings: LoopSettings,
    key: jax.Array,
    noise_std: float,
    max_device_bytes: int | None,
) -> Params:
    params = init_params(data.dim, data.num_classes, settings)
    opt_state = make_optimizer(settings).init(params)
    rows = chunk_rows(data, max_device_bytes)
    for t in range(settings.steps):
        bias = head_bias(params, data.num_classes, settings)
        sums = streamed_sum(
            data, lambda X, y, m, p=params, b=bias: gradient_sums(p, b, X, y, m, settings), rows
        )
        params, opt_state = noisy_step(
            params,
            opt_state,
            sums,
            jax.random.fold_in(key, t),
            noise_std,
            settings=settings,
            num_rows=data.num_rows,
            kernels=kernels(),
        )
    return params


@register_method("dp_gd")
def train(
    data: TrainData, config: FitConfig, ledger: Any, key: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """T noisy full-batch steps (module docstring); returns ``(W [D, K], b [K])``."""
    read_options(config, {}, "dp_gd")
    noise_std = charge_full_batch(
        ledger, "dp_gd: clipped gradient sums", config.clip_norm, config.steps
    )
    settings = LoopSettings.of(config, data.num_classes)
    if data.features is None:
        params = _streamed(data, settings, key, noise_std, config.max_device_bytes)
    else:
        params = _in_memory(data, settings, key, noise_std)
    return params["W"], head_bias(params, data.num_classes, config)
