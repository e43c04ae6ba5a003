"""The compiled pass over one chunk of rows on the device: the per-row map and the statistic.

``chunk_pass(x, y, valid, weights, mean, transform, args; stat, static, part)`` returns
``(stat(chunk, args), number of real rows that are not finite)`` for a chunk of rows as stored
(docs/architecture.md, "Rows"). Without centring or standardisation the preprocessing is a
per-row scale folded into the statistic (``_preprocessing.fold_factors``); with either, or for
mapped rows ``x' = pre(x) A`` (DP-FC's whitened rows), the bounded rows are materialised chunk
by chunk. ``part`` keeps one side of a keyed hash split of the rows (``select``'s validation
rows). One compiled pass serves every chunk of a given shape, whatever the dataset (the chunk
sizes are bucketed, ``_layout``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from private_head._preprocessing import (
    IDENTITY,
    finite_rows,
    fold_factors,
    folds,
    needs_rescale,
    relative_fold_factors,
    rescaled,
    row_exponents,
    rows32,
    safe_norms,
)
from private_head._statistics import Chunk, Stage1

_HIGHEST = jax.lax.Precision.HIGHEST


def _part_mask(x: jax.Array, y: jax.Array, part: tuple[int, float, bool]) -> jax.Array:
    """1.0 for rows on the asked side of the hash split (``Part``), else 0.0."""
    salt, fraction, validation = part
    words = _row_words(x)
    rng = np.random.default_rng([salt & 0xFFFFFFFF, salt >> 32 & 0xFFFFFFFF, 0x5E1EC7])
    keys = rng.integers(1, 2**32, size=(2, words.shape[1] + 1), dtype=np.uint64).astype(np.uint32)
    keys |= np.uint32(1)  # odd multipliers
    lanes = []
    for lane in range(2):
        k = jnp.asarray(keys[lane])
        h = jnp.sum(words * k[None, :-1], axis=1, dtype=jnp.uint32)
        h = h + y.astype(jnp.uint32) * k[-1] + jnp.uint32(lane)
        lanes.append(_fmix32(h))
    threshold = int(fraction * 2.0**64)
    hi, lo = jnp.uint32(threshold >> 32), jnp.uint32(threshold & 0xFFFFFFFF)
    below = (lanes[0] < hi) | ((lanes[0] == hi) & (lanes[1] < lo))
    side = below if validation else ~below
    return side.astype(jnp.float32)


def _row_words(x: jax.Array) -> jax.Array:
    """Each row's bytes as uint32 words [c, W] (16-bit values two per word)."""
    if x.dtype.itemsize == 4:
        return jax.lax.bitcast_convert_type(x, jnp.uint32)
    half = jax.lax.bitcast_convert_type(x, jnp.uint16).astype(jnp.uint32)
    if half.shape[1] % 2:
        half = jnp.pad(half, ((0, 0), (0, 1)))
    return half[:, 0::2] | (half[:, 1::2] << 16)


def _fmix32(h: jax.Array) -> jax.Array:
    """MurmurHash3's 32-bit finaliser."""
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def _mapped_chunk(x, y, mask, mean, transform, static) -> tuple[Chunk, jax.Array]:
    """The chunk of mapped (``transform``) or centred rows: materialised float32 rows."""
    radius = static[1]
    if transform is not None:  # rows already mapped: x' = pre(x) A, float32
        x32 = jnp.matmul(rows32(x, mean, static)[0], transform, precision=_HIGHEST)
        norms = safe_norms(x32)
        return Chunk(x32, y, mask, jnp.ones_like(mask), norms, None, IDENTITY.static), norms
    x32, norms = rows32(x, mean, static)  # centred, standardised: not a per-row scale
    flag = ("identity", radius, "none", "none", 0)
    return Chunk(x32, y, mask, jnp.ones_like(mask), norms, None, flag), norms


def _bad(norms: jax.Array, valid: jax.Array) -> jax.Array:
    return jnp.sum(jnp.where(jnp.isfinite(norms), 0.0, valid))


@functools.partial(jax.jit, static_argnames=("stat", "static", "part"))
def chunk_pass(x, y, valid, weights, mean, transform, args, *, stat, static, part):
    """One chunk: ``(stat(chunk, args), number of real rows that are not finite)``. Without
    centring or standardisation the preprocessing is folded (``fold_factors``); a chunk with
    extreme entries takes the branch that rescales its rows by powers of two first."""
    mask = valid if weights is None else valid * weights
    if part is not None:
        mask = mask * _part_mask(x, y, part)
    if transform is not None or not folds(static):
        chunk, norms = _mapped_chunk(x, y, mask, mean, transform, static)
        return stat(chunk, args), _bad(norms, valid)

    def folded(x_in, e):
        a, norms = fold_factors(x_in, static, e)
        return stat(Chunk(x_in, y, mask, a, norms, None, static), args), _bad(norms, valid)

    if isinstance(stat, Stage1):  # a large output: no branch around it, powers of two inside
        a, norms, e = relative_fold_factors(x, static)
        chunk = Chunk(x, y, mask, a, norms, None, static, exponents=e)
        return stat(chunk, args), _bad(norms, valid)

    e = row_exponents(x)
    return jax.lax.cond(
        needs_rescale(e), lambda: folded(rescaled(x, e), e), lambda: folded(x, None)
    )


@functools.partial(jax.jit, static_argnames=("static",))
def bad_rows(x, valid, mean, *, static):
    del mean, static
    return (~finite_rows(x)) & (valid > 0)


@functools.partial(jax.jit, static_argnames=("static", "part"))
def mapped_rows(x, y, valid, mean, transform, *, static, part):
    mask = valid if part is None else valid * _part_mask(x, y, part)
    return jnp.matmul(rows32(x, mean, static)[0], transform, precision=_HIGHEST) * mask[:, None]


@functools.partial(jax.jit, static_argnames=("num_segments",))
def scatter(Z, ids, *, num_segments):
    return jax.ops.segment_sum(Z, ids, num_segments=num_segments)


@functools.partial(jax.jit, static_argnames=("stat",))
def stage2(S, rest, *, stat):
    return stat.stage2(S, rest)


@jax.jit
def tree_add(a, b):
    return jax.tree_util.tree_map(jnp.add, a, b)


def validation_mask(features, labels, fraction: float, salt: int = 0) -> np.ndarray:
    """Bool [N]: the rows a ``Part(salt, fraction, validation=True)`` keeps (``select``'s split),
    computed from each row's own values and label."""
    x = jnp.asarray(features)
    mask = _part_jit(x, jnp.asarray(labels, jnp.int32), part=(int(salt), float(fraction), True))
    return np.asarray(mask) > 0


_part_jit = jax.jit(_part_mask, static_argnames=("part",))
