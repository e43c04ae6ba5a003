"""The optax optimiser of a few-step private head, and the head's parameter tree.

Parameters are ``{"W": [D, K]}`` plus ``{"b": [K]}`` when the bias is trained; an untrained bias
stays at its initial value and is never released. Weight decay (``lambda``) acts on W only and is
post-processing of the noisy gradients (no privacy cost):

    sgd, momentum:  u = -lr * (g + lambda W)         (with heavy-ball momentum for "momentum")
    adam:           AdamW, decoupled decay lr * lambda * W
    lamb:           LAMB, decoupled decay inside the trust ratio
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from private_head.config import FitConfig


class LoopSettings(NamedTuple):
    """The fit settings a compiled training loop depends on, hashable so that ``jax.jit`` takes
    them as one static argument: equal settings (and shapes) reuse the compiled loop.

    Stands in for ``FitConfig`` in ``init_params``, ``head_bias``, ``make_optimizer`` and the
    gradient sums (same field names; ``initial_bias`` is fixed for ``num_classes``).
    """

    num_classes: int
    steps: int
    clip_norm: float
    loss: str
    train_bias: bool
    bias0: float
    optimizer: str
    learning_rate: float
    momentum: float
    weight_decay: float

    @classmethod
    def of(cls, config: FitConfig, num_classes: int) -> LoopSettings:
        """The loop settings of ``config`` for ``num_classes`` (public) classes."""
        return cls(
            int(num_classes),
            int(config.steps),
            float(config.clip_norm),
            config.loss,
            bool(config.train_bias),
            float(config.initial_bias(num_classes)),
            config.optimizer,
            float(config.learning_rate),
            float(config.momentum),
            float(config.weight_decay),
        )

    def initial_bias(self, num_classes: int) -> float:
        """``bias0`` (computed for ``self.num_classes``, the only class count it serves)."""
        if num_classes != self.num_classes:
            raise ValueError(f"settings for {self.num_classes} classes, asked for {num_classes}")
        return self.bias0


Settings = FitConfig | LoopSettings


def init_params(dim: int, num_classes: int, config: Settings) -> dict[str, jax.Array]:
    """Zero W (and the initial bias when it is trained)."""
    params = {"W": jnp.zeros((dim, num_classes), jnp.float32)}
    if config.train_bias:
        params["b"] = jnp.full(num_classes, config.initial_bias(num_classes), jnp.float32)
    return params


def head_bias(params: dict[str, jax.Array], num_classes: int, config: Settings) -> jax.Array:
    """The bias the head uses: trained, or fixed at ``config.initial_bias``."""
    if "b" in params:
        return params["b"]
    return jnp.full(num_classes, config.initial_bias(num_classes), jnp.float32)


def make_optimizer(config: Settings) -> optax.GradientTransformation:
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
