"""The fused clipped-gradient sum of a linear head, and its zero-init shortcut.

For a linear head ``z_i = W^T x_i + b`` with softmax cross-entropy (or one-vs-all sigmoid
cross-entropy), example i's gradient is ``g_i = [x_i; 1] e_i^T`` with ``e_i = p_i - onehot(y_i)``,
``p_i = softmax(z_i)`` (or ``sigmoid(z_i)``). Its norm is closed-form,

    ||g_i||^2 = (||x_i||^2 + [train_bias]) * ||e_i||^2,

so the sum of clipped gradients is one matmul, ``X^T (c * E)`` with ``c_i = min(1, C / ||g_i||)``:
per-example gradients are never materialised and a private step costs what a non-private one does.

The per-row preprocessing scale ``x'_i = a_i x_i`` (``row_scale``; see ``preprocessing``) is folded
in: ``z_i = a_i (x_i^T W) + b`` and ``X'^T (c E) = X^T ((a c) E)``, so the preprocessed rows are
never written. Inputs may be float32, float16 or bfloat16; products run in the input dtype with
float32 accumulation.

Rounding never lifts a contribution above C: C is shrunk by ``clip_slack`` (``1 - 2u`` for 16-bit
inputs of unit roundoff u, because the residual ``a c e_i`` is rounded to the input dtype before
the second matmul, times ``1 - (D + K + 16) 2^-24`` for the float32 norms); a rounded residual
entry that would be subnormal is flushed to zero (rounding there is not relative), and float16
residuals are first scaled by a power of two into the top of the range (exactly undone after).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

LOSSES = ("softmax", "sigmoid")
# Up to this many classes the zero-init class sums are a one-hot matmul, above it a scatter-add.
ONE_HOT_MAX_CLASSES = 128
_U32 = 2.0**-24


def clip_slack(dtype: jnp.dtype, dim: int, num_classes: int) -> float:
    """Factor on C: ``(1 - 2u) (1 - (D + K + 16) 2^-24)`` (module docstring); ``u = 0`` for f32."""
    dtype = jnp.dtype(dtype)
    rounding = 0.0 if dtype == jnp.float32 else 2.0 * float(jnp.finfo(dtype).eps)
    return (1.0 - rounding) * (1.0 - (dim + num_classes + 16) * _U32)


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


def to_compute_dtype(R: jax.Array, dtype: jnp.dtype) -> tuple[jax.Array, jax.Array]:
    """``(R_cast, scale)`` with ``R_cast ~ R * scale`` in ``dtype``, every entry rounded with
    relative error <= u: subnormals flushed to zero, float16 scaled by a power of two first."""
    dtype = jnp.dtype(dtype)
    one = jnp.ones((), jnp.float32)
    if dtype == jnp.float32:
        return R, one
    scale = one
    if dtype == jnp.float16:
        _, exponent = jnp.frexp(jnp.max(jnp.abs(R)))
        scale = jnp.ldexp(one, 15 - exponent)  # max |R| * scale in [2^14, 2^15)
    scaled = R * scale
    tiny = float(jnp.finfo(dtype).tiny)
    return jnp.where(jnp.abs(scaled) < tiny, 0.0, scaled).astype(dtype), scale


def _scaled_rows(X, row_scale, sq_norms):
    a = jnp.ones(X.shape[0], jnp.float32) if row_scale is None else row_scale
    sq = row_sq_norms(X) * a * a if sq_norms is None else sq_norms
    return a, sq


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
    row_scale: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Sum over rows ``x'_i = a_i x_i`` of per-example gradients clipped to L2 norm ``clip_norm``.

    ``gW = X^T ((a c) E)`` [D, K] and ``gb = sum_i c_i e_i`` [K] (zeros when ``train_bias`` is
    False: the bias is then neither part of the gradient norm nor released). ``mask`` (0/1 [N])
    removes rows; ``row_scale`` a [N] (default 1) is the per-row preprocessing scale and
    ``sq_norms`` [N] (default ``a^2 ||x||^2``) the squared norms of the scaled rows. Both results
    are float32. Every row's contribution has norm <= ``clip_norm``: the sum has sensitivity C.
    """
    compute = X.dtype
    D, K = W.shape
    C = clip_norm * clip_slack(compute, D, K)
    a, sq_x = _scaled_rows(X, row_scale, sq_norms)
    xw = jnp.dot(X, W.astype(compute), preferred_element_type=jnp.float32)
    z = a[:, None] * xw + b.astype(jnp.float32)
    E = _probabilities(z, loss) - jax.nn.one_hot(y, K, dtype=jnp.float32)
    c = _clip_factors(sq_x, jnp.sum(E * E, axis=1), C, train_bias, mask)
    R, scale = to_compute_dtype((a * c)[:, None] * E, compute)
    gW = jnp.dot(X.T, R, preferred_element_type=jnp.float32) / scale
    gb = jnp.sum(c[:, None] * E, axis=0) if train_bias else jnp.zeros(K, jnp.float32)
    return gW, gb


def initial_probabilities(num_classes: int, loss: str, bias0: float | jax.Array) -> jax.Array:
    """``p0``: every example's prediction at ``W = 0`` with bias ``bias0`` (scalar or [K])."""
    z0 = jnp.broadcast_to(jnp.asarray(bias0, jnp.float32), (num_classes,))
    return _probabilities(z0, loss)


def zero_init_row_weights(
    X: jax.Array,
    y: jax.Array,
    num_classes: int,
    clip_norm: float | jax.Array,
    *,
    loss: str,
    train_bias: bool,
    bias0: float | jax.Array,
    mask: jax.Array | None,
    sq_norms: jax.Array | None,
    row_scale: jax.Array | None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(w, c, p0)``: each row's weight ``w_i = a_i c_i`` in the class sums, its clip factor, and
    the prediction ``p0`` at W = 0 (see ``zero_init_class_sums``)."""
    C = clip_norm * clip_slack(X.dtype, X.shape[1], num_classes)
    a, sq_x = _scaled_rows(X, row_scale, sq_norms)
    p0 = initial_probabilities(num_classes, loss, bias0)
    sq_e = jnp.sum(p0 * p0) - 2.0 * p0 + 1.0  # [K], ||p0 - onehot(k)||^2
    c = _clip_factors(sq_x, sq_e[y], C, train_bias, mask)
    return a * c, c, p0


def from_class_sums(
    S: jax.Array, counts: jax.Array, total: jax.Array, p0: jax.Array, train_bias: bool
) -> tuple[jax.Array, jax.Array]:
    """``(gW, gb)`` from the weighted class sums S [K, D], the clipped class counts and their sum:
    ``gW = s p0^T - S^T`` with ``s = sum_k S_k``, ``gb = total p0 - counts``."""
    gW = jnp.sum(S, axis=0)[:, None] * p0[None, :] - S.T
    if not train_bias:
        return gW, jnp.zeros(p0.shape[0], jnp.float32)
    return gW, total * p0 - counts


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
    sq_norms: jax.Array | None = None,
    row_scale: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """``clipped_gradient_sum`` at ``W = 0, b = bias0`` without the forward matmul.

    At W = 0 every example predicts the same ``p0``, so ``e_i = p0 - onehot(y_i)`` depends only on
    the label and ``||e_i||^2 = ||p0||^2 - 2 p0[y_i] + 1``. With ``s_k = sum_{y_i = k} a_i c_i x_i``
    (class sums, one pass over X: a one-hot matmul for few classes, a scatter-add for many) and
    ``s = sum_k s_k``:

        gW = s p0^T - S,     gb = (sum_i c_i) p0 - (sum_{y_i = k} c_i)_k.
    """
    weight, c, p0 = zero_init_row_weights(
        X,
        y,
        num_classes,
        clip_norm,
        loss=loss,
        train_bias=train_bias,
        bias0=bias0,
        mask=mask,
        sq_norms=sq_norms,
        row_scale=row_scale,
    )
    if num_classes <= ONE_HOT_MAX_CLASSES:  # S^T = (w * onehot(y))^T X: one memory-bound matmul
        M, scale = to_compute_dtype(
            jax.nn.one_hot(y, num_classes, dtype=jnp.float32) * weight[:, None], X.dtype
        )
        S = jnp.dot(M.T, X, preferred_element_type=jnp.float32) / scale
    else:  # a scatter-add of the scaled rows: X read once, no N x D x K work
        S = jax.ops.segment_sum(
            weight[:, None] * X.astype(jnp.float32), y, num_segments=num_classes
        )
    counts = jax.ops.segment_sum(c, y, num_segments=num_classes) if train_bias else c[:0]
    return from_class_sums(S, counts, jnp.sum(c), p0, train_bias)


def gaussian_noise_like(key: jax.Array, tree, std: float | jax.Array):
    """Independent N(0, std^2) float32 noise with the shapes of ``tree``'s leaves (one key per
    leaf, split from ``key``): the same noise on every process that holds the same key."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(key, len(leaves))
    noise = [
        std * jax.random.normal(k, jnp.shape(leaf), jnp.float32)
        for k, leaf in zip(keys, leaves, strict=True)
    ]
    return jax.tree_util.tree_unflatten(treedef, noise)
