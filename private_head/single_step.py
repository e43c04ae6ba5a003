"""``single_step`` (the default): one full-batch noisy step from W = 0, a class-sum classifier.

At W = 0 every example predicts the same ``p0`` (uniform for softmax, ``sigmoid(b0)`` for the
one-vs-all loss), so the clipped gradient sum is a combination of clipped class sums of X
(``kernel.zero_init_class_sums``: no forward matmul, X read once). The head is

    W = -lr * (G + N(0, (sigma C)^2 I)) / N,      sigma = 1 / ledger.remaining_mu,

and the bias stays at its initial value unless ``config.train_bias`` (then it takes the same step
from its own noisy sum). Predictions ``argmax_k x^T W_k + b0`` do not depend on ``lr > 0``: the
method is hyperparameter-free. The noise is drawn from ``fold_in(key, 0)``, as ``dp_gd``'s first
step, so ``single_step`` equals ``dp_gd`` with T = 1 and plain SGD.
"""

from __future__ import annotations

from typing import Any

import jax

from private_head.config import FitConfig
from private_head.data import TrainData
from private_head.kernel import gaussian_noise_like, zero_init_class_sums
from private_head.methods import read_options, register_method
from private_head.noise import charge_full_batch
from private_head.sharding import device_rows
from private_head.streaming import chunk_rows, streamed_sum


def class_sums(data: TrainData, config: FitConfig) -> dict[str, jax.Array]:
    """The clipped gradient sums at W = 0 (``"b"`` only when the bias is trained)."""
    K = data.num_classes

    def sums(X, y, mask):
        gW, gb = zero_init_class_sums(
            X,
            y,
            K,
            config.clip_norm,
            loss=config.loss,
            train_bias=config.train_bias,
            bias0=config.initial_bias(K),
            mask=mask,
        )
        return {"W": gW, "b": gb} if config.train_bias else {"W": gW}

    if data.features is None:
        return streamed_sum(data, sums, chunk_rows(data, config.max_device_bytes))
    return sums(*device_rows(data.features, data.labels))


@register_method("single_step")
def train(
    data: TrainData, config: FitConfig, ledger: Any, key: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """One noisy step from zero (module docstring); returns ``(W [D, K], b [K])``."""
    read_options(config, {}, "single_step")
    noise_std = charge_full_batch(ledger, "single_step: clipped gradient sum", config.clip_norm, 1)
    sums = class_sums(data, config)
    noise = gaussian_noise_like(jax.random.fold_in(key, 0), sums, noise_std)
    step = {k: -config.learning_rate * (sums[k] + noise[k]) / data.num_rows for k in sums}
    b0 = config.initial_bias(data.num_classes)
    bias = b0 + step["b"] if "b" in step else jax.numpy.full(data.num_classes, b0, "float32")
    return step["W"], bias
