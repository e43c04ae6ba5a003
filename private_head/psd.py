"""Sufficient statistics of the training rows, symmetric Gaussian noise, and PSD ridge algebra.

Shared by the second-order heads (``dp_least_squares``, ``dp_feature_covariance``) and by
``dp_prototypes``. Everything here is exact linear algebra; privacy lives in the callers, which
charge the ledger before adding the noise drawn here.

- ``gram_and_class_sums``: ``G = X~^T X~`` and ``S = X~^T Y`` (Y one-hot, so column k of S is the
  sum of the class-k rows), with ``X~ = [X, 1]`` when a constant feature is appended. Accumulated
  in float32 (half-precision rows are multiplied with float32 accumulation) over
  ``data.iter_chunks`` when the rows are streamed from a store.
- ``gram``: ``X^T X`` alone; ``class_sums_and_counts``: ``(S^T, class counts)``.
- ``symmetric_gaussian_noise``: ``E = U + triu(U, 1)^T`` where U's upper triangle (diagonal
  included) is iid ``N(0, std^2)``: a symmetric matrix with ``D(D+1)/2`` independent entries.
- ``psd_project``: ``V diag(max(lambda, 0)) V^T`` for the eigendecomposition ``V diag(lambda) V^T``.
- ``psd_ridge_solve``: ``(psd_project(G) + ridge I)^{-1} B`` through the same eigendecomposition.
- ``psd_inverse_sqrt``: ``(psd_project(G) + ridge I)^{-1/2}``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

if TYPE_CHECKING:
    from private_head.data import TrainData

DEFAULT_CHUNK_ROWS = 65536
_HIGHEST = jax.lax.Precision.HIGHEST


def _with_constant(x: jax.Array, append_one: bool) -> jax.Array:
    """Rows in their own dtype, with a trailing constant-1 column when ``append_one``."""
    if append_one:
        x = jnp.concatenate([x, jnp.ones((x.shape[0], 1), x.dtype)], axis=1)
    return x


def _accumulate(data: TrainData, stats: Callable, chunk_rows: int):
    """``sum over chunks of stats(X_chunk, y_chunk)`` (a single call when rows are in memory)."""
    if data.features is not None:
        return stats(data.features, data.labels)
    total = None
    for x, y in data.iter_chunks(chunk_rows):
        part = stats(x, y)
        total = part if total is None else jax.tree.map(jnp.add, total, part)
    if total is None:
        raise ValueError("the training data has no rows")
    return total


@partial(jax.jit, static_argnames=("append_one", "num_classes"))
def _gram_stats(x, y, *, append_one: bool, num_classes: int):
    x = _with_constant(x, append_one)
    gram = jnp.matmul(x.T, x, precision=_HIGHEST, preferred_element_type=jnp.float32)
    sums = jax.ops.segment_sum(x.astype(jnp.float32), y, num_segments=num_classes)
    return gram, sums.T


@partial(jax.jit, static_argnames=("num_classes",))
def _class_stats(x, y, *, num_classes: int):
    sums = jax.ops.segment_sum(x.astype(jnp.float32), y, num_segments=num_classes)
    counts = jax.ops.segment_sum(jnp.ones(y.shape, jnp.float32), y, num_segments=num_classes)
    return sums, counts


def gram_and_class_sums(
    data: TrainData, *, append_one: bool = False, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> tuple[jax.Array, jax.Array]:
    """``(X~^T X~ [D', D'], X~^T Y [D', K])`` in float32; ``D' = D + append_one``."""
    stats = partial(_gram_stats, append_one=append_one, num_classes=data.num_classes)
    return _accumulate(data, stats, chunk_rows)


@jax.jit
def _gram_only(x, y):
    del y
    return jnp.matmul(x.T, x, precision=_HIGHEST, preferred_element_type=jnp.float32)


def gram(data: TrainData, *, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> jax.Array:
    """``X^T X [D, D]`` in float32."""
    return _accumulate(data, _gram_only, chunk_rows)


def class_sums_and_counts(
    data: TrainData, *, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> tuple[jax.Array, jax.Array]:
    """``(S [K, D], n [K])``: per-class sums of the rows and per-class counts, float32."""
    return _accumulate(data, partial(_class_stats, num_classes=data.num_classes), chunk_rows)


def symmetric_gaussian_noise(key: jax.Array, dim: int, std: float) -> jax.Array:
    """Symmetric ``[dim, dim]`` float32 noise whose upper triangle (with the diagonal) is iid
    ``N(0, std^2)`` and whose lower triangle mirrors it."""
    upper = jnp.triu(std * jax.random.normal(key, (dim, dim), jnp.float32))
    return upper + jnp.triu(upper, 1).T


def _eigh(matrix: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Eigendecomposition of the symmetric part of ``matrix`` (float32)."""
    matrix = matrix.astype(jnp.float32)
    return jnp.linalg.eigh(0.5 * (matrix + matrix.T))


@jax.jit
def psd_project(matrix: jax.Array) -> jax.Array:
    """Nearest PSD matrix in Frobenius norm: ``V diag(max(lambda, 0)) V^T``."""
    evals, evecs = _eigh(matrix)
    return jnp.matmul(evecs * jnp.maximum(evals, 0.0), evecs.T, precision=_HIGHEST)


@jax.jit
def psd_ridge_solve(gram: jax.Array, rhs: jax.Array, ridge: float) -> jax.Array:
    """``(psd_project(gram) + ridge I)^{-1} rhs`` via one eigendecomposition (ridge > 0, or
    ridge >= 0 with a positive definite gram)."""
    evals, evecs = _eigh(gram)
    scale = 1.0 / (jnp.maximum(evals, 0.0) + ridge)
    proj = jnp.matmul(evecs.T, rhs.astype(jnp.float32), precision=_HIGHEST)
    return jnp.matmul(evecs, proj * scale[:, None], precision=_HIGHEST)


@jax.jit
def psd_inverse_sqrt(gram: jax.Array, ridge: float) -> jax.Array:
    """``(psd_project(gram) + ridge I)^{-1/2}`` (symmetric)."""
    evals, evecs = _eigh(gram)
    scale = jax.lax.rsqrt(jnp.maximum(evals, 0.0) + ridge)
    return jnp.matmul(evecs * scale, evecs.T, precision=_HIGHEST)
