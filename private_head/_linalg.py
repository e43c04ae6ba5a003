"""PSD algebra of the second-order heads, on the device, in float32 through one eigendecomposition.

- ``psd_project(G) = V diag(max(lambda, 0)) V^T`` for ``sym(G) = V diag(lambda) V^T``: the nearest
  PSD matrix in Frobenius norm;
- ``psd_ridge_solve(G, B, ridge) = (psd_project(G) + ridge I)^{-1} B``;
- ``whitening(G, n, ridge, edge, floor, threshold) = a (max(M, floor edge) + ridge I)^{-1/2}``
  with ``M = psd_project(G) / n`` (its eigenvalues raised to at least ``floor edge``) and
  ``a^2 = tr(M) / tr((max(M, floor edge) + ridge I)^{-1} M)``, so the whitened rows keep their
  mean squared norm; the identity when M's top eigenvalue is below ``threshold edge`` (DP-FC).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_HIGHEST = jax.lax.Precision.HIGHEST


def _eigh(matrix: jax.Array) -> tuple[jax.Array, jax.Array]:
    matrix = matrix.astype(jnp.float32)
    return jnp.linalg.eigh(0.5 * (matrix + matrix.T))


@jax.jit
def psd_project(matrix: jax.Array) -> jax.Array:
    evals, evecs = _eigh(matrix)
    return jnp.matmul(evecs * jnp.maximum(evals, 0.0), evecs.T, precision=_HIGHEST)


@jax.jit
def psd_ridge_solve(gram: jax.Array, rhs: jax.Array, ridge: float | jax.Array) -> jax.Array:
    evals, evecs = _eigh(gram)
    scale = 1.0 / (jnp.maximum(evals, 0.0) + ridge)
    proj = jnp.matmul(evecs.T, rhs.astype(jnp.float32), precision=_HIGHEST)
    return jnp.matmul(evecs, proj * scale[:, None], precision=_HIGHEST)


@jax.jit
def whitening(
    gram: jax.Array,
    num_rows: float | jax.Array,
    ridge: float | jax.Array,
    edge: float | jax.Array = 0.0,
    floor: float | jax.Array = 0.0,
    threshold: float | jax.Array = 0.0,
) -> jax.Array:
    """DP-FC's map A of the rows, from a noisy Gram whose noise has spectral norm ``edge`` (in
    units of ``M = G / n``). Eigenvalues of M below the edge cannot be told from the noise's own:
    they are raised to ``floor edge``, so A is flat (a multiple of the identity) on that
    subspace instead of a random distortion of it; and when no eigenvalue reaches ``threshold
    edge`` the Gram shows no structure above its noise and A is the identity."""
    evals, evecs = _eigh(gram / num_rows)
    evals = jnp.maximum(evals, 0.0)
    inv = 1.0 / (jnp.maximum(evals, floor * edge) + ridge)
    scale = jnp.sqrt(jnp.sum(evals) / jnp.maximum(jnp.sum(evals * inv), 1e-30))
    transform = scale * jnp.matmul(evecs * jnp.sqrt(inv), evecs.T, precision=_HIGHEST)
    structured = jnp.max(evals) >= threshold * edge
    return jnp.where(structured, transform, jnp.eye(gram.shape[0], dtype=transform.dtype))
