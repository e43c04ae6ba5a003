"""The optax optimiser of a few-step head, the head's parameter tree, and one noisy update.

Parameters are ``{"W": [D, K]}`` plus ``{"b": [K]}`` when the bias is trained; an untrained bias
stays at its initial value and is never released. Weight decay ``lambda`` acts on W only and is
post-processing of the released gradients (no privacy cost):

    sgd, momentum:  u = -lr * (g + lambda W)         (heavy-ball momentum for "momentum")
    adam:           AdamW, decoupled decay lr * lambda * W
    lamb:           LAMB, decoupled decay inside the trust ratio

``apply_step`` divides the released sums by the public divisor n and applies one update; it is
compiled once per optimiser, momentum, decay and shapes (the learning rate and the divisor are
traced), so repeated fits reuse it, whatever their budget.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import optax

from private_head._settings import Settings

OPTIMIZERS = ("sgd", "momentum", "adam", "lamb")


@dataclass(frozen=True)
class DescentSettings(Settings):
    """The settings of a descent loop, resolved (hashable: a static jit argument)."""

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

    def compiled(self) -> DescentSettings:
        """What a compiled update depends on: these settings without the traced values."""
        return dataclasses.replace(self, steps=0, clip_norm=0.0, learning_rate=0.0)


def init_params(dim: int, settings: DescentSettings) -> dict[str, jax.Array]:
    """Zero W (and the initial bias when it is trained)."""
    params = {"W": jnp.zeros((dim, settings.num_classes), jnp.float32)}
    if settings.train_bias:
        params["b"] = jnp.full(settings.num_classes, settings.bias0, jnp.float32)
    return params


def head_bias(params: dict[str, jax.Array], settings: DescentSettings) -> jax.Array:
    """The bias the head uses: trained, or fixed at ``bias0``."""
    if "b" in params:
        return params["b"]
    return jnp.full(settings.num_classes, settings.bias0, jnp.float32)


def make_optimizer(
    settings: DescentSettings, learning_rate: float | jax.Array | None = None
) -> optax.GradientTransformation:
    """The optax transformation named by ``settings.optimizer`` (module docstring), at
    ``learning_rate`` (default ``settings.learning_rate``)."""
    lr = settings.learning_rate if learning_rate is None else learning_rate
    wd = settings.weight_decay

    def decay_mask(params):
        return {name: name == "W" for name in params}

    if settings.optimizer in ("sgd", "momentum"):
        momentum = settings.momentum if settings.optimizer == "momentum" else None
        base = optax.sgd(lr, momentum=momentum)
        if wd == 0:
            return base
        return optax.chain(optax.add_decayed_weights(wd, mask=decay_mask), base)
    if settings.optimizer == "adam":
        return optax.adamw(lr, weight_decay=wd, mask=decay_mask)
    if settings.optimizer == "lamb":
        return optax.lamb(lr, weight_decay=wd, mask=decay_mask)
    raise ValueError(f"unknown optimizer {settings.optimizer!r}")


def init_state(params: dict[str, jax.Array], *, settings: DescentSettings) -> Any:
    return _init_state(params, settings=settings.compiled())


@functools.partial(jax.jit, static_argnames=("settings",))
def _init_state(params: dict[str, jax.Array], *, settings: DescentSettings) -> Any:
    return make_optimizer(settings, 1.0).init(params)  # the state does not depend on the rate


def apply_step(
    params: dict[str, jax.Array],
    state: Any,
    released: dict[str, jax.Array],
    divisor: float | jax.Array,
    *,
    settings: DescentSettings,
) -> tuple[dict[str, jax.Array], Any]:
    """``params <- opt(params, released / n)``: one update from released (noisy) sums."""
    return _apply_step(
        params, state, released, divisor, settings.learning_rate, settings=settings.compiled()
    )


@functools.partial(jax.jit, static_argnames=("settings",))
def _apply_step(params, state, released, divisor, learning_rate, *, settings: DescentSettings):
    grads = jax.tree_util.tree_map(lambda s: s / divisor, released)
    updates, state = make_optimizer(settings, learning_rate).update(grads, state, params)
    return optax.apply_updates(params, updates), state


__all__ = [
    "OPTIMIZERS",
    "DescentSettings",
    "apply_step",
    "head_bias",
    "init_params",
    "init_state",
    "make_optimizer",
]
