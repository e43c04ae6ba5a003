"""The optax optimiser of a few-step private head, and the head's parameter tree.

Parameters are ``{"W": [D, K]}`` plus ``{"b": [K]}`` when the bias is trained; an untrained bias
stays at its initial value and is never released. Weight decay (``lambda``) acts on W only and is
post-processing of the noisy gradients (no privacy cost):

    sgd, momentum:  u = -lr * (g + lambda W)         (with heavy-ball momentum for "momentum")
    adam:           AdamW, decoupled decay lr * lambda * W
    lamb:           LAMB, decoupled decay inside the trust ratio
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from private_head.config import FitConfig


def init_params(dim: int, num_classes: int, config: FitConfig) -> dict[str, jax.Array]:
    """Zero W (and the initial bias when it is trained)."""
    params = {"W": jnp.zeros((dim, num_classes), jnp.float32)}
    if config.train_bias:
        params["b"] = jnp.full(num_classes, config.initial_bias(num_classes), jnp.float32)
    return params


def head_bias(params: dict[str, jax.Array], num_classes: int, config: FitConfig) -> jax.Array:
    """The bias the head uses: trained, or fixed at ``config.initial_bias``."""
    if "b" in params:
        return params["b"]
    return jnp.full(num_classes, config.initial_bias(num_classes), jnp.float32)


def make_optimizer(config: FitConfig) -> optax.GradientTransformation:
    """The optax transformation named by ``config.optimizer`` (module docstring)."""
    lr, wd = config.learning_rate, config.weight_decay

    def decay_mask(params):
        return {name: name == "W" for name in params}

    if config.optimizer in ("sgd", "momentum"):
        momentum = config.momentum if config.optimizer == "momentum" else None
        base = optax.sgd(lr, momentum=momentum)
        if wd == 0:
            return base
        return optax.chain(optax.add_decayed_weights(wd, mask=decay_mask), base)
    if config.optimizer == "adam":
        return optax.adamw(lr, weight_decay=wd, mask=decay_mask)
    if config.optimizer == "lamb":
        return optax.lamb(lr, weight_decay=wd, mask=decay_mask)
    raise ValueError(f"unknown optimizer {config.optimizer!r}")
