"""The per-row map applied to every training row on the device, and identically at prediction.

With radius r = ``feature_norm``, ``bound(x) = s(x) x`` where ``s(x) = r / ||x||`` (``normalize``)
or ``min(1, r / ||x||)`` (shrink); a zero row stays zero (``s = 0``):

    center="none"     x -> bound(x)
    center="public"   x -> bound(x - m)          m: the caller's public mean (raw feature units)
    center="private"  x -> bound(bound(x) - m)   m: the released private mean of bound(x)

so every preprocessed row has ``||x'|| <= r``. Each map has the affine form ``x' = a x - b m`` with
per-row scalars ``a, b`` (``rows_factors``); without centring ``b = 0`` and the map is a per-row
scale, which the gradient kernels fold into their clip factor instead of writing ``x'``.

Norms are computed without overflow or underflow, ``||x|| = M ||x / M||`` with ``M = max_j |x_j|``,
in float32. A materialised row (``rows32``) is measured again and shrunk to at most
``r (1 - slack(D))``, where ``slack(D) = (D + 16) 2^-24`` bounds the float32 rounding of a norm
and a scale, so that the row as it enters a statistic has norm at most r (the sensitivity the
methods declare). The kind
``"identity"`` (internal: rows already mapped, e.g. DP-FC's whitened rows) leaves rows unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

KINDS = ("normalize", "shrink", "identity")
CENTERS = ("none", "public", "private")
_U32 = 2.0**-24  # float32 unit roundoff


def slack(dim: int) -> float:
    """Relative shrink that covers float32 rounding of a norm over ``dim`` entries and a scale."""
    return (dim + 16) * _U32


@dataclass(frozen=True)
class Preprocessing:
    """One per-row map (module docstring); ``mean`` is a [D] float32 array or None."""

    kind: str = "normalize"
    feature_norm: float = 1.0
    center: str = "none"
    mean: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS or self.center not in CENTERS:
            raise ValueError(f"bad preprocessing kind={self.kind!r} center={self.center!r}")
        if (self.center == "none") != (self.mean is None):
            raise ValueError(f"center={self.center!r} needs a mean exactly when it is not 'none'")
        if self.mean is not None:
            object.__setattr__(self, "mean", np.asarray(self.mean, np.float32))

    @property
    def static(self) -> tuple[str, float, str]:
        """The hashable part a compiled pass is specialised on (the mean is a traced argument)."""
        return (self.kind, float(self.feature_norm), self.center)

    @property
    def centered(self) -> bool:
        return self.center != "none"

    def device_mean(self) -> jax.Array | None:
        return None if self.mean is None else jnp.asarray(self.mean, jnp.float32)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description (the mean itself is stored as an array next to it)."""
        return {"kind": self.kind, "feature_norm": self.feature_norm, "center": self.center}

    @classmethod
    def from_dict(cls, values: dict[str, Any], mean: np.ndarray | None) -> Preprocessing:
        return cls(str(values["kind"]), float(values["feature_norm"]), str(values["center"]), mean)

    def apply(self, x: Any) -> np.ndarray:
        """The preprocessed rows of a host array, float32 [N, D] (prediction)."""
        static = self.static
        out = _apply_jit(jnp.asarray(x), self.device_mean(), static=static)
        return np.asarray(out)


IDENTITY = Preprocessing("identity", float("inf"))


def safe_norms(x: jax.Array) -> jax.Array:
    """``||x_i||`` in float32 [N] without overflow or underflow (``M ||x / M||``); NaN/inf rows
    give a non-finite norm."""
    x = x.astype(jnp.float32)
    big = jnp.max(jnp.abs(x), axis=1)
    safe = jnp.where((big > 0) & jnp.isfinite(big), big, 1.0)
    unit = x / safe[:, None]
    norm = safe * jnp.sqrt(jnp.sum(unit * unit, axis=1))
    return jnp.where(jnp.isfinite(big), norm, big)  # inf stays inf, NaN propagates via sum


def bound_scale(norms: jax.Array, kind: str, radius: float) -> jax.Array:
    """``s`` with ``bound(x) = s x``: ``r / ||x||`` or ``min(1, r / ||x||)``; 0 for a zero row."""
    if kind == "identity":
        return jnp.ones_like(norms)
    positive = norms > 0
    inv = radius / jnp.where(positive, norms, 1.0)
    scale = inv if kind == "normalize" else jnp.minimum(1.0, inv)
    return jnp.where(positive, scale, 0.0)


def rows_factors(
    x: jax.Array, mean: jax.Array | None, static: tuple[str, float, str]
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(a, b, ||x'||)`` [N] with ``x' = a x - b m`` (module docstring), float32.

    A row holding NaN/inf gives a non-finite ``||x'||`` (the validation signal).
    """
    kind, radius, center = static
    norms = safe_norms(x)
    if center == "none":
        a = bound_scale(norms, kind, radius)
        return a, jnp.zeros_like(a), a * norms
    x32 = x.astype(jnp.float32)
    s1 = jnp.ones_like(norms) if center == "public" else bound_scale(norms, kind, radius)
    centred = safe_norms(s1[:, None] * x32 - mean[None, :])
    s2 = bound_scale(centred, kind, radius)
    bad = ~jnp.isfinite(norms)
    return s2 * s1, s2, jnp.where(bad, norms, s2 * centred)


def rows32(
    x: jax.Array, mean: jax.Array | None, static: tuple[str, float, str]
) -> tuple[jax.Array, jax.Array]:
    """``(x', ||x'||)``: the preprocessed rows materialised in float32 and bounded as stored.

    ``x' = a x - b m`` is computed, its norm ``n`` measured on the float32 values, and the row
    scaled by ``min(1, r (1 - slack(D)) / n)``: whatever the rounding of ``a x - b m`` (which can
    cancel when x is close to m), the row that enters a statistic has norm at most r.
    """
    kind, radius, _ = static
    a, b, _ = rows_factors(x, mean, static)
    out = a[:, None] * x.astype(jnp.float32)
    if mean is not None:
        out = out - b[:, None] * mean[None, :]
    norms = safe_norms(out)
    if kind == "identity":
        return out, norms
    limit = radius * (1.0 - slack(x.shape[1]))
    fix = jnp.where(norms > limit, limit / jnp.where(norms > 0, norms, 1.0), 1.0)
    return out * fix[:, None], norms * fix


def _apply_impl(x, mean, static):
    return rows32(x, mean, static)[0]


_apply_jit = jax.jit(_apply_impl, static_argnames=("static",))
