"""``dp_sgd``: Poisson-sampled noisy clipped gradient steps from W = 0 (PLD accounting).

Step t includes every example independently with probability ``q = batch_size / N`` (``batch_size``
is the expected batch size; a method option) and updates with

    g_t = (sum_{i in B_t} clip_C(grad_i(W_t)) + N(0, (sigma C)^2 I)) / (q N),

dividing by the public expected batch size, never by |B_t|. sigma is the smallest noise
multiplier for which T steps of PoissonSampled(q, Gaussian(sigma)) fit the ledger's budget under
dp-accounting's PLD accountant (add-or-remove-one); the event is recorded before the loop.

Fixed compiled shapes: the sampled indices are processed in chunks of ``B_max`` rows (padded, with a
mask), ``B_max = ceil(qN + 6 sqrt(qN(1 - q)))`` by default, so one chunk holds the whole sample
except in a 6-standard-deviation binomial tail (about 1e-9 for large qN; heavier when qN is a few
rows, where it only costs time). A larger sample is NOT truncated (truncation would change the
mechanism the accounting describes): the loop takes as many chunks as the sample needs, so the
step's running time (never its output) depends on whether the sample overflowed one chunk.
Streamed rows use the whole-data pass with the sample as a row mask.
Options: ``batch_size`` (required, 1 <= batch_size <= N), ``max_batch_size`` (B_max override).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from accounting import BudgetExceededError, noise_multiplier_poisson, poisson_event
from private_head import full_batch
from private_head.config import FitConfig
from private_head.data import TrainData
from private_head.full_batch import gradient_sums, noisy_step, noisy_update
from private_head.kernel import clipped_gradient_sum
from private_head.methods import read_options, register_method
from private_head.optimizers import LoopSettings, head_bias, init_params, make_optimizer
from private_head.sharding import device_rows
from private_head.streaming import chunk_rows, streamed_sum

OPTIONS = ("batch_size", "max_batch_size")
TAIL_STDS = 6.0


def max_batch_size(num_rows: int, rate: float) -> int:
    """``B_max = ceil(qN + 6 sqrt(qN(1-q)))``, at most N: the chunk size of the sampled rows."""
    mean = rate * num_rows
    return int(min(num_rows, math.ceil(mean + TAIL_STDS * math.sqrt(mean * (1 - rate)))))


def poisson_sample(
    key: jax.Array, step: int | jax.Array, num_rows: int, rate: float | jax.Array
) -> jax.Array:
    """Bool [N]: example i is in step t's batch with probability q, independently of the others."""
    return jax.random.uniform(jax.random.fold_in(key, step), (num_rows,)) < rate


def sampled_gradient_sum(
    W, b, X, y, include, clip_norm, chunk: int, *, loss: str, train_bias: bool
) -> tuple[jax.Array, jax.Array]:
    """Clipped gradient sum over the rows with ``include`` set, ``chunk`` rows at a time.

    Gathers the included rows (in index order) into as many fixed-size chunks as needed; equals
    ``clipped_gradient_sum(..., mask=include)`` for any sample size.
    """
    n = include.shape[0]
    count = jnp.sum(include.astype(jnp.int32))
    order = jnp.nonzero(include, size=n, fill_value=0)[0]
    order = jnp.concatenate([order, jnp.zeros(chunk, order.dtype)])
    zero = (jnp.zeros(W.shape, jnp.float32), jnp.zeros(W.shape[1], jnp.float32))

    def body(state):
        j, (gW, gb) = state
        start = j * chunk
        ids = jax.lax.dynamic_slice(order, (start,), (chunk,))
        valid = start + jnp.arange(chunk) < count
        dW, db = clipped_gradient_sum(
            W, b, X[ids], y[ids], clip_norm, loss=loss, train_bias=train_bias, mask=valid
        )
        return j + 1, (gW + dW, gb + db)

    _, sums = jax.lax.while_loop(lambda s: s[0] * chunk < count, body, (0, zero))
    return sums


RELEASE = "dp_sgd: Poisson-sampled clipped gradient sums"


def calibrate(ledger: Any, config: FitConfig, rate: float) -> float:
    """Record the Poisson-sampled steps in the ledger and return their noise multiplier sigma.

    With an empty ledger sigma = ``noise_multiplier_poisson(epsilon, delta, q, T)`` (with the
    ledger's PLD discretisation, so that the ledger accepts it). After earlier releases that
    sigma is a lower bound; sigma is then raised until ``ledger.epsilon_after_event`` (the PLD
    composition with everything already spent) fits the budget, and bisected to 0.1%.
    """
    steps = config.steps
    sigma = noise_multiplier_poisson(
        config.epsilon,
        config.delta,
        rate,
        steps,
        value_discretization_interval=ledger.value_discretization_interval,
    )
    if ledger.releases:

        def fits(s: float) -> bool:
            return ledger.epsilon_after_event(poisson_event(s, rate, steps)) <= config.epsilon

        low, high = sigma, sigma
        while not fits(high):
            low, high = high, high * 1.5
            if high > 1e4 * sigma:
                raise BudgetExceededError("no privacy budget is left for dp_sgd")
        while high - low > 1e-3 * high:
            mid = 0.5 * (low + high)
            low, high = (low, mid) if fits(mid) else (mid, high)
        sigma = high
    ledger.record_event(RELEASE, poisson_event(sigma, rate, steps))
    return sigma


def _options(config: FitConfig, num_rows: int) -> tuple[int, int]:
    options = read_options(config, dict.fromkeys(OPTIONS), "dp_sgd")
    batch = options["batch_size"]
    if batch is None or not 1 <= batch <= num_rows:
        raise ValueError(
            f"dp_sgd needs batch_size (the expected batch size) in [1, N={num_rows}], got {batch!r}"
        )
    chunk = options["max_batch_size"] or max_batch_size(num_rows, batch / num_rows)
    if int(chunk) != chunk or chunk < 1:
        raise ValueError(f"max_batch_size must be a positive integer, got {chunk!r}")
    return batch, int(chunk)


def kernels() -> tuple[Callable, ...]:
    """The kernels the compiled loop traces, as a static cache key (see ``full_batch.kernels``)."""
    return (clipped_gradient_sum, *full_batch.kernels())


@functools.partial(jax.jit, static_argnames=("settings", "num_rows", "batch", "chunk", "kernels"))
def run_in_memory(
    params,
    X,
    y,
    mask,
    key_sample,
    key_noise,
    noise_std,
    *,
    settings: LoopSettings,
    num_rows: int,
    batch: int,
    chunk: int,
    kernels: tuple[Callable, ...],
):
    """All T sampled steps as one ``lax.scan``, compiled once per settings/shapes."""
    del kernels  # a cache key only
    opt = make_optimizer(settings)
    K, N, total = settings.num_classes, num_rows, int(X.shape[0])

    def step(carry, t):
        params, opt_state = carry
        include = poisson_sample(key_sample, t, N, batch / N)
        if mask is not None:  # the same sample, placed on the real rows of the padded layout
            real = jnp.nonzero(mask > 0, size=N, fill_value=total - 1)[0]
            include = jnp.zeros(total, bool).at[real].set(include)
        gW, gb = sampled_gradient_sum(
            params["W"],
            head_bias(params, K, settings),
            X,
            y,
            include,
            settings.clip_norm,
            chunk,
            loss=settings.loss,
            train_bias=settings.train_bias,
        )
        sums = {"W": gW, "b": gb} if "b" in params else {"W": gW}
        return noisy_update(
            opt, params, opt_state, sums, jax.random.fold_in(key_noise, t), noise_std, batch
        ), None

    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), jnp.arange(settings.steps))
    return params


def _in_memory(data, settings, key_sample, key_noise, noise_std, batch, chunk):
    rows = device_rows(data.features, data.labels)
    params = init_params(data.dim, data.num_classes, settings)
    return run_in_memory(
        params,
        rows.X,
        rows.y,
        rows.mask,
        key_sample,
        key_noise,
        noise_std,
        settings=settings,
        num_rows=data.num_rows,
        batch=batch,
        chunk=chunk,
        kernels=kernels(),
    )


_sample = jax.jit(poisson_sample, static_argnums=2)


def _streamed(data, settings, key_sample, key_noise, noise_std, batch, max_device_bytes):
    params = init_params(data.dim, data.num_classes, settings)
    opt_state = make_optimizer(settings).init(params)
    rows = chunk_rows(data, max_device_bytes)
    for t in range(settings.steps):
        bias = head_bias(params, data.num_classes, settings)
        include = _sample(key_sample, t, data.num_rows, batch / data.num_rows)
        sums = streamed_sum(
            data,
            lambda X, y, m, p=params, b=bias: gradient_sums(p, b, X, y, m, settings),
            rows,
            row_weights=include,
        )
        params, opt_state = noisy_step(
            params,
            opt_state,
            sums,
            jax.random.fold_in(key_noise, t),
            noise_std,
            settings=settings,
            num_rows=batch,
            kernels=full_batch.kernels(),
        )
    return params


@register_method("dp_sgd")
def train(
    data: TrainData, config: FitConfig, ledger: Any, key: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """T Poisson-sampled noisy steps (module docstring); returns ``(W [D, K], b [K])``."""
    batch, chunk = _options(config, data.num_rows)
    sigma = calibrate(ledger, config, batch / data.num_rows)
    noise_std = sigma * config.clip_norm
    key_sample, key_noise = jax.random.split(key)
    settings = LoopSettings.of(config, data.num_classes)
    if data.features is None:
        params = _streamed(
            data, settings, key_sample, key_noise, noise_std, batch, config.max_device_bytes
        )
    else:
        params = _in_memory(data, settings, key_sample, key_noise, noise_std, batch, chunk)
    return params["W"], head_bias(params, data.num_classes, config)
