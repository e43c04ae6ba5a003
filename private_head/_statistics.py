"""Per-row statistics: what the methods ask ``Rows.sum`` to add up over the training rows.

Each statistic is a frozen (hashable) value; ``stat(chunk, args)`` returns a pytree of float32
sums over the rows of one ``Chunk``, ignoring rows whose mask is 0, and ``row_bytes`` estimates
its working memory per row (for the chunk-size rule). ``Rows`` compiles one pass per (statistic,
preprocessing, chunk shape) and reuses it across fits.

A chunk gives the rows as stored, ``x`` (or materialised float32 rows when the preprocessing
centres), their preprocessing scale ``a`` and the norms of the preprocessed rows; ``rows32()``
materialises ``x'`` in float32, bounded as ``_preprocessing.rows32`` says, for the statistics whose
sensitivity is a bound on the rows (Gram, class sums, the private mean).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from private_head._kernel import (
    ONE_HOT_MAX_CLASSES,
    clipped_gradient_sum,
    from_class_sums,
    initial_probabilities,
    zero_init_class_sums,
    zero_init_row_weights,
)
from private_head._preprocessing import group_means, times_pow2, within_radius

_HIGHEST = jax.lax.Precision.HIGHEST


class Chunk(NamedTuple):
    """One chunk of rows on the device (module docstring)."""

    x: jax.Array  # [c, D] rows as stored, or materialised preprocessed float32 rows
    y: jax.Array  # int32 [c]
    mask: jax.Array  # float32 [c]: 0 for padding and rows outside the pass
    scale: jax.Array  # float32 [c]: a with x' = a x (1 when x is materialised)
    norms: jax.Array  # float32 [c]: ||x'_i||
    mean: jax.Array | None
    static: tuple  # the preprocessing's static part; kind "identity" when x is materialised
    exponents: jax.Array | None = None  # e: scale is relative to x 2^-e (staged statistics)

    def rows32(self) -> jax.Array:
        """``x'`` [c, D] in float32, norm <= r, masked rows zero."""
        x = self.x.astype(jnp.float32)
        if self.static[0] != "identity":  # the folded map: x' = a x, bounded as stored
            x = within_radius(self.scale[:, None] * x, self.static[1])[0]
        return x * self.mask[:, None]


class Statistic:
    """Base: a sum over rows. Subclasses are frozen dataclasses (hashable static arguments).

    A statistic that is mostly a scatter-add of computed rows may also define ``scatters()``,
    ``stage1`` and ``stage2``: XLA:CPU runs a scatter whose updates are computed in the same
    program about ten times slower than one whose updates are an input, so on CPU ``Rows`` runs
    ``stage1`` (the rows to add ``Z``, their segment ids, and the rest of the sums), then the
    scatter as its own program, and ``stage2`` once on the totals (it must be linear).
    """

    def __call__(self, chunk: Chunk, args: Any) -> Any:
        raise NotImplementedError

    def scatters(self) -> bool:
        return False

    def row_bytes(self, dim: int, num_classes: int) -> int:
        """Working memory per row beyond the row itself (float32 temporaries)."""
        return 4 * (dim + 4)


@dataclass(frozen=True)
class Nothing(Statistic):
    """No statistic (a pass that only validates the rows)."""

    def __call__(self, chunk: Chunk, args: Any) -> jax.Array:
        del chunk, args
        return jnp.zeros((), jnp.float32)


@dataclass(frozen=True)
class ZeroInitSums(Statistic):
    """The clipped gradient sums at W = 0 (``_kernel.zero_init_class_sums``); args: clip norm."""

    num_classes: int
    loss: str
    train_bias: bool
    bias0: float

    def __call__(self, chunk: Chunk, clip_norm: Any) -> dict[str, jax.Array]:
        gW, gb = zero_init_class_sums(
            chunk.x,
            chunk.y,
            self.num_classes,
            clip_norm,
            loss=self.loss,
            train_bias=self.train_bias,
            bias0=self.bias0,
            mask=chunk.mask,
            sq_norms=chunk.norms * chunk.norms,
            row_scale=chunk.scale,
        )
        return {"W": gW, "b": gb} if self.train_bias else {"W": gW}

    def scatters(self) -> bool:
        return self.num_classes > ONE_HOT_MAX_CLASSES and jax.default_backend() == "cpu"

    def stage1(self, chunk: Chunk, clip_norm: Any) -> tuple[jax.Array, jax.Array, dict]:
        weight, c, _ = zero_init_row_weights(
            chunk.x,
            chunk.y,
            self.num_classes,
            clip_norm,
            loss=self.loss,
            train_bias=self.train_bias,
            bias0=self.bias0,
            mask=chunk.mask,
            sq_norms=chunk.norms * chunk.norms,
            row_scale=chunk.scale,
        )
        counts = jax.ops.segment_sum(c, chunk.y, num_segments=self.num_classes)
        rest = {"counts": counts, "total": jnp.sum(c)}
        x = chunk.x.astype(jnp.float32)
        if chunk.exponents is not None:  # exact powers of two: no overflow, no underflow
            x = times_pow2(x, -chunk.exponents)
        return weight[:, None] * x, chunk.y, rest

    def stage2(self, S: jax.Array, rest: dict) -> dict[str, jax.Array]:
        p0 = initial_probabilities(self.num_classes, self.loss, self.bias0)
        gW, gb = from_class_sums(S, rest["counts"], rest["total"], p0, self.train_bias)
        return {"W": gW, "b": gb} if self.train_bias else {"W": gW}

    def row_bytes(self, dim: int, num_classes: int) -> int:
        return 4 * (min(num_classes, 128) + dim + 8)


@dataclass(frozen=True)
class GradientSums(Statistic):
    """Clipped gradient sums at the head ``(params["W"], bias)``; args ``(params, bias, C)``."""

    loss: str
    train_bias: bool

    def __call__(self, chunk: Chunk, args: Any) -> dict[str, jax.Array]:
        params, bias, clip_norm = args
        gW, gb = clipped_gradient_sum(
            params["W"],
            bias,
            chunk.x,
            chunk.y,
            clip_norm,
            loss=self.loss,
            train_bias=self.train_bias,
            mask=chunk.mask,
            sq_norms=chunk.norms * chunk.norms,
            row_scale=chunk.scale,
        )
        return {"W": gW, "b": gb} if self.train_bias else {"W": gW}

    def row_bytes(self, dim: int, num_classes: int) -> int:
        return 4 * (4 * num_classes + 8)


@dataclass(frozen=True)
class LossAndGradient(Statistic):
    """Unclipped sums of the loss and its gradient at ``(W, b)`` (the non-private ceiling)."""

    num_classes: int
    loss: str

    def __call__(self, chunk: Chunk, args: Any) -> tuple[jax.Array, jax.Array, jax.Array]:
        W, b = args
        x = chunk.rows32()
        z = jnp.dot(x, W, precision=_HIGHEST) + b
        onehot = jax.nn.one_hot(chunk.y, self.num_classes, dtype=jnp.float32)
        if self.loss == "softmax":
            logp = jax.nn.log_softmax(z)
            losses = -jnp.sum(onehot * logp, axis=1)
            E = jnp.exp(logp) - onehot
        else:
            losses = jnp.sum(
                jnp.logaddexp(0.0, z) - onehot * z, axis=1
            )  # sigmoid cross-entropy per class
            E = jax.nn.sigmoid(z) - onehot
        E = E * chunk.mask[:, None]
        total = jnp.sum(losses * chunk.mask)
        return total, jnp.dot(x.T, E, precision=_HIGHEST), jnp.sum(E, axis=0)

    def row_bytes(self, dim: int, num_classes: int) -> int:
        return 4 * (dim + 4 * num_classes + 8)


@dataclass(frozen=True)
class PreprocessedRows(Statistic):
    """Not a sum: a chunk's preprocessed rows ``x'`` [c, D] (float32, bounded, masked rows zero),
    exactly as every statistic sees them (``Rows.preprocessed``: the non-private ceiling's rows)."""

    def __call__(self, chunk: Chunk, args: Any) -> jax.Array:
        del args
        return chunk.rows32()


@dataclass(frozen=True)
class GramAndSums(Statistic):
    """``(X~^T X~, X~^T Y)`` of the bounded rows, ``X~ = [X', 1]`` when ``append_one``."""

    num_classes: int
    append_one: bool

    def __call__(self, chunk: Chunk, args: Any) -> tuple[jax.Array, jax.Array]:
        del args
        x = chunk.rows32()
        if self.append_one:
            x = jnp.concatenate([x, chunk.mask[:, None]], axis=1)
        gram = jnp.matmul(x.T, x, precision=_HIGHEST)
        sums = jax.ops.segment_sum(x, chunk.y, num_segments=self.num_classes)
        return gram, sums.T


@dataclass(frozen=True)
class Gram(Statistic):
    """``X'^T X'`` of the bounded rows."""

    def __call__(self, chunk: Chunk, args: Any) -> jax.Array:
        del args
        x = chunk.rows32()
        return jnp.matmul(x.T, x, precision=_HIGHEST)


@dataclass(frozen=True)
class ClassSumsAndCounts(Statistic):
    """``(S [K, D], n [K])``: per-class sums of the bounded rows and per-class counts."""

    num_classes: int

    def __call__(self, chunk: Chunk, args: Any) -> tuple[jax.Array, jax.Array]:
        del args
        x = chunk.rows32()
        sums = jax.ops.segment_sum(x, chunk.y, num_segments=self.num_classes)
        counts = jax.ops.segment_sum(chunk.mask, chunk.y, num_segments=self.num_classes)
        return sums, counts


@dataclass(frozen=True)
class RowSum(Statistic):
    """``sum_i x'_i`` [D] of the bounded rows (the private mean's statistic)."""

    def __call__(self, chunk: Chunk, args: Any) -> jax.Array:
        del args
        return jnp.sum(chunk.rows32(), axis=0)


@dataclass(frozen=True)
class GroupMoments(Statistic):
    """``(sum_i u_i, sum_i v_i)`` [G] each, of the bounded rows b_i (``||b_i|| <= r``):
    ``u_i = [mean_{j in g} b_ij]_g`` and ``v_i = [mean_{j in g} b_ij^2]_g`` over the G contiguous
    groups (``_preprocessing.group_ids``), the private standardisation's statistics. With m_min
    the smallest group, Cauchy-Schwarz gives ``||u_i|| <= r / sqrt(m_min)`` and
    ``||v_i||_2 <= ||v_i||_1 <= r^2 / m_min`` (``sensitivities``); each row's u_i and v_i are
    clipped to those norms after the float32 arithmetic (``within_radius``), so the released
    sums have them as sensitivities in the precision they are computed in."""

    groups: int
    radius: float
    smallest: int  # m_min

    def sensitivities(self) -> tuple[float, float]:
        """``(Delta_u, Delta_v) = (r / sqrt(m_min), r^2 / m_min)``."""
        return self.radius / self.smallest**0.5, self.radius**2 / self.smallest

    def __call__(self, chunk: Chunk, args: Any) -> tuple[jax.Array, jax.Array]:
        del args
        b = chunk.rows32()  # masked rows are zero, so they add nothing
        delta_u, delta_v = self.sensitivities()
        u = within_radius(group_means(b, self.groups), delta_u)[0]
        v = within_radius(group_means(b * b, self.groups), delta_v)[0]
        return jnp.sum(u, axis=0), jnp.sum(v, axis=0)

    def row_bytes(self, dim: int, num_classes: int) -> int:
        return 4 * (2 * dim + 2 * self.groups + 8)


@dataclass(frozen=True)
class CorrectCounts(Statistic):
    """Per candidate head j (args: ``[(W_j, b_j), ...]``, ``count`` of them): the number of rows
    it predicts correctly on the preprocessed rows (selection scores, sensitivity 1 each)."""

    count: int

    def __call__(self, chunk: Chunk, heads: Any) -> jax.Array:
        x = chunk.rows32()
        counts = []
        for W, b in heads:
            predicted = jnp.argmax(jnp.dot(x, W, precision=_HIGHEST) + b, axis=1)
            counts.append(jnp.sum(chunk.mask * (predicted == chunk.y)))
        return jnp.stack(counts)


@dataclass(frozen=True)
class Stage1(Statistic):
    """The first stage of a scattering statistic, as a statistic of its own (``Rows`` only)."""

    inner: Statistic

    def __call__(self, chunk: Chunk, args: Any) -> Any:
        return self.inner.stage1(chunk, args)
