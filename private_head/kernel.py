"""The fused clipped-gradient sum of a linear head, and its zero-init shortcut.

For a linear head ``z_i = W^T x_i + b`` with softmax cross-entropy (or one-vs-all sigmoid
cross-entropy), example i's gradient is ``g_i = [x_i; 1] e_i^T`` with ``e_i = p_i - onehot(y_i)``,
``p_i = softmax(z_i)`` (or ``sigmoid(z_i)``). Its norm is closed-form,

    ||g_i||^2 = (||x_i||^2 + [train_bias]) * ||e_i||^2,

so the sum of clipped gradients is one matmul, ``X^T (c * E)`` with ``c_i = min(1, C / ||g_i||)``:
per-example gradients are never materialised and a private step costs what a non-private one does.
Inputs may be float32, float16 or bfloat16; every reduction accumulates in float32.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

LOSSES = ("softmax", "sigmoid")
# Up to this many classes the zero-init class sums are a one-hot matmul, above it a scatter-add.
ONE_HOT_MAX_CLASSES = 128


def clip_slack(dtype: jnp.dtype) -> float:
    """Factor ``1 - 2u`` applied to C for inputs of unit roundoff ``u`` (f16/bf16).

    The clipped residual ``c * e_i`` is rounded to the input dtype before the second matmul; each
    entry moves by at most a factor ``1 + u``, so clipping to ``C (1 - 2u)`` keeps every rounded
    contribution within C. In float32 the slack is zero (the residual stays float32).
    """
    dtype = jnp.dtype(dtype)
    if dtype == jnp.float32:
        return 1.0
    return 1.0 - 2.0 * float(jnp.finfo(dtype).eps)


def row_sq_norms(X: jax.Array) -> jax.Array:
    """``||x_i||^2`` in float32 [N]."""
    return jnp.sum(jnp.square(X.astype(jnp.float32)), axis=1)


def _probabilities(z: jax.Array, loss: str) -> jax.Array:
    if loss == "softmax":
        return jax.nn.softmax(z, axis=-1)
    if loss == "sigmoid":
        return jax.nn.sigmoid(z)
    raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")


def _clip_factors(
    sq_x: jax.Array, sq_e: jax.Array, clip_norm: float, train_bias: bool, mask: jax.Array | None
) -> jax.Array:
    """``c_i = min(1, C / sqrt((||x_i||^2 + [train_bias]) ||e_i||^2))``, zero where mask is 0."""
    sq_g = (sq_x + (1.0 if train_bias else 0.0)) * sq_e
    c = jnp.minimum(1.0, clip_norm * jax.lax.rsqrt(jnp.maximum(sq_g, 1e-30)))
    if mask is not None:
        c = c * mask.astype(jnp.float32)
    return c


@functools.partial(jax.jit, static_argnames=("loss", "train_bias"))
def clipped_gradient_sum(
    W: jax.Array,
    b: jax.Array,
    X: jax.Array,
    y: jax.Array,
    clip_norm: float | jax.Array,
    *,
    loss: str = "softmax",
    train_bias: bool = True,
    mask: jax.Array | None = None,
    sq_norms: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Sum over rows of per-example gradients clipped to L2 norm ``clip_norm``.

    ``gW = X^T (c * E)`` [D, K] and ``gb = sum_i c_i e_i`` [K] (zeros when ``train_bias`` is False:
    the bias is then neither part of the gradient norm nor released). ``mask`` (0/1 or bool [N])
    removes padded rows. ``sq_norms`` (``row_sq_norms(X)``, optional) saves a pass over X when the
    same rows serve several steps. Both results are float32; the matmuls run in ``X.dtype`` with
    float32 accumulation. Every row's contribution has norm <= ``clip_norm``: the sum has
    sensitivity C.
    """
    compute = X.dtype
    C = clip_norm * clip_slack(compute)
    z = jnp.dot(X, W.astype(compute), preferred_element_type=jnp.float32) + b.astype(jnp.float32)
    E = _probabilities(z, loss) - jax.nn.one_hot(y, W.shape[1], dtype=jnp.float32)
    sq_x = row_sq_norms(X) if sq_norms is None else sq_norms
    c = _clip_factors(sq_x, jnp.sum(E * E, axis=1), C, train_bias, mask)
    cE = c[:, None] * E
    gW = jnp.dot(X.T, cE.astype(compute), preferred_element_type=jnp.float32)
    gb = jnp.sum(cE, axis=0) if train_bias else jnp.zeros(W.shape[1], jnp.float32)
    return gW, gb


def initial_probabilities(num_classes: int, loss: str, bias0: float | jax.Array) -> jax.Array:
    """``p0``: every example's prediction at ``W = 0`` with bias ``bias0`` (scalar or [K])."""
    z0 = jnp.broadcast_to(jnp.asarray(bias0, jnp.float32), (num_classes,))
    return _probabilities(z0, loss)


@functools.partial(jax.jit, static_argnames=("num_classes", "loss", "train_bias"))
def zero_init_class_sums(
    X: jax.Array,
    y: jax.Array,
    num_classes: int,
    clip_norm: float | jax.Array,
    *,
    loss: str = "softmax",
    train_bias: bool = False,
    bias0: float | jax.Array = 0.0,
    mask: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """``clipped_gradient_sum`` at ``W = 0, b = bias0`` without the forward matmul.

    At W = 0 every example predicts the same ``p0``, so ``e_i = p0 - onehot(y_i)`` depends only on
    the label and ``||e_i||^2 = ||p0||^2 - 2 p0[y_i] + 1``. With ``s_k = sum_{y_i = k} c_i x_i``
    (class sums, one pass over X: a one-hot matmul for few classes, a scatter-add for many) and
    ``s = sum_k s_k``:

        gW = s p0^T - S,     gb = (sum_i c_i) p0 - (sum_{y_i = k} c_i)_k.
    """
    C = clip_norm * clip_slack(X.dtype)
    p0 = initial_probabilities(num_classes, loss, bias0)
    sq_e = jnp.sum(p0 * p0) - 2.0 * p0 + 1.0  # [K], ||p0 - onehot(k)||^2
    c = _clip_factors(row_sq_norms(X), sq_e[y], C, train_bias, mask)
    if num_classes <= ONE_HOT_MAX_CLASSES:  # S^T = (c * onehot(y))^T X: one memory-bound matmul
        M = (jax.nn.one_hot(y, num_classes, dtype=jnp.float32) * c[:, None]).astype(X.dtype)
        S = jnp.dot(M.T, X, preferred_element_type=jnp.float32)
    else:  # a scatter-add of the scaled rows: X read once, no N x D x K work
        S = jax.ops.segment_sum(c[:, None] * X.astype(jnp.float32), y, num_segments=num_classes)
    gW = jnp.sum(S, axis=0)[:, None] * p0[None, :] - S.T
    if not train_bias:
        return gW, jnp.zeros(num_classes, jnp.float32)
    counts = jax.ops.segment_sum(c, y, num_segments=num_classes)
    return gW, jnp.sum(c) * p0 - counts


def gaussian_noise_like(key: jax.Array, tree, std: float | jax.Array):
    """Independent N(0, std^2) float32 noise with the shapes of ``tree``'s leaves.

    Deterministic in ``key``: every process of a multi-host run draws the same noise from the same
    key.
    """
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(key, len(leaves))
    noise = [
        std * jax.random.normal(k, jnp.shape(leaf), jnp.float32)
        for k, leaf in zip(keys, leaves, strict=True)
    ]
    return jax.tree_util.tree_unflatten(treedef, noise)
