"""The per-row map applied to every training row on the device, and identically at prediction.

With radius r = ``feature_norm``, ``bound(x) = s(x) x`` where ``s(x) = r / ||x||`` (``normalize``)
or ``min(1, r / ||x||)`` (shrink); a zero row stays zero (``s = 0``):

    center="none"     x -> bound(x)
    center="public"   x -> bound(x - m)          m: the caller's public mean (raw feature units)
    center="private"  x -> bound(bound(x) - m)   m: the released private mean of bound(x)

so every preprocessed row has ``||x'|| <= r``. Each map has the affine form ``x' = a x - b m`` with
per-row scalars ``a, b``; without centring ``b = 0`` and the map is a per-row scale, which the
gradient kernels fold into their clip factor instead of writing ``x'`` (``fold_factors``).

Standardisation (``standardize``; docs/architecture.md, "Standardisation") replaces centring; it is
not a per-row scale, so its rows are always materialised (``rows32``), never folded. With the D
coordinates split into G contiguous groups, ``gid(j) = floor(j G / D)`` (``group_ids``):

    standardize="group"    x -> bound(gn(x)),  gn(x)_j = (x_j - mu_g) / sqrt(var_g + eps ms)
                           mu_g, var_g: mean and (biased) variance of x over group g = gid(j);
                           ms = mean_j x_j^2 over the whole row, eps = 1e-5 (``GROUP_EPS``): a
                           relative eps, so gn(c x) = gn(x) for c > 0; a function of the row alone
    standardize="private"  x -> bound((bound(x) - m) / s)   m, s [D]: released statistics of the
                           bounded rows, expanded from their G groups (``_train``)
    standardize="public"   x -> bound((x - m) / s)          m, s [D]: the caller's public mean and
                           scale, in raw feature units (as ``center="public"``)

``(.. - m) / s`` is clipped to +-2^120 before the bound, so no finite row becomes non-finite.

Norms and scales are computed in float32 on rows rescaled exactly by powers of two (``prescale``;
a chunk with entries beyond ``2^+-60`` is rescaled before its scale is folded), so they neither
overflow nor underflow for any float32 row. A materialised row (``rows32``) is measured again and
shrunk to at most ``r (1 - slack(D))``, where ``slack(D) = (D + 16) 2^-24`` bounds the float32
rounding of a norm and a scale, so that the row as it enters a statistic has norm at most r (the
sensitivity the methods declare). The kind ``"identity"`` (internal: rows already mapped, e.g.
DP-FC's whitened rows) leaves rows unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

KINDS = ("normalize", "shrink", "identity")
CENTERS = ("none", "public", "private")
STANDARDIZE = ("none", "group", "private", "public")
GROUP_EPS = 1e-5  # group normalisation's eps, relative to the row's mean square
_CLIP = 2.0**120  # standardised coordinates are clipped here (float32 holds up to 2^128)
_U32 = 2.0**-24  # float32 unit roundoff


def slack(dim: int) -> float:
    """Relative shrink that covers float32 rounding of a norm over ``dim`` entries and a scale."""
    return (dim + 16) * _U32


@dataclass(frozen=True)
class Preprocessing:
    """One per-row map (module docstring). ``mean`` [D] float32: the centring mean, or the
    standardisation's m; ``scale`` [D] float32: the standardisation's s (``"private"`` and
    ``"public"`` only); ``groups``: G of group normalisation, and for ``"private"`` the groups its
    statistics were pooled over (recorded, the map uses the expanded m and s)."""

    kind: str = "normalize"
    feature_norm: float = 1.0
    center: str = "none"
    mean: np.ndarray | None = None
    standardize: str = "none"
    groups: int = 0
    scale: np.ndarray | None = None

    def __post_init__(self) -> None:
        if (
            self.kind not in KINDS
            or self.center not in CENTERS
            or self.standardize not in STANDARDIZE
        ):
            raise ValueError(
                f"bad preprocessing kind={self.kind!r} center={self.center!r} "
                f"standardize={self.standardize!r}"
            )
        if self.center != "none" and self.standardize != "none":
            raise ValueError("standardisation centres the rows itself: center must be 'none'")
        affine = self.standardize in ("private", "public")
        if (self.center != "none" or affine) != (self.mean is not None):
            raise ValueError(
                f"center={self.center!r} standardize={self.standardize!r} needs a mean exactly "
                "when it centres or standardises"
            )
        if affine != (self.scale is not None):
            raise ValueError(f"standardize={self.standardize!r} needs a scale exactly when affine")
        if self.standardize in ("group", "private") and int(self.groups) < 1:
            raise ValueError(f"standardize={self.standardize!r} needs groups >= 1")
        object.__setattr__(self, "groups", int(self.groups))
        if self.mean is not None:
            object.__setattr__(self, "mean", np.asarray(self.mean, np.float32))
        if self.scale is not None:
            scale = np.asarray(self.scale, np.float32)
            if scale.shape != np.shape(self.mean) or not (np.isfinite(scale) & (scale > 0)).all():
                raise ValueError("the standardisation scale must be positive and finite, like m")
            object.__setattr__(self, "scale", scale)

    @property
    def static(self) -> tuple[str, float, str, str, int]:
        """The hashable part a compiled pass is specialised on (m and s are traced arguments):
        ``(kind, r, center, standardize, G of group normalisation else 0)``."""
        groups = self.groups if self.standardize == "group" else 0
        return (self.kind, float(self.feature_norm), self.center, self.standardize, groups)

    def device_params(self) -> Any:
        """The traced arguments of the map: None, the mean, or ``(m, s)`` (float32 device
        arrays)."""
        if self.mean is None:
            return None
        mean = jnp.asarray(self.mean, jnp.float32)
        return mean if self.scale is None else (mean, jnp.asarray(self.scale, jnp.float32))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description (the mean and scale are stored as arrays next to it); the
        standardisation's entries only when it is on, so a head without one reads as before."""
        out: dict[str, Any] = {
            "kind": self.kind,
            "feature_norm": self.feature_norm,
            "center": self.center,
        }
        if self.standardize != "none":
            out.update(standardize=self.standardize, groups=self.groups)
        return out

    @classmethod
    def from_dict(
        cls, values: dict[str, Any], mean: np.ndarray | None, scale: np.ndarray | None = None
    ) -> Preprocessing:
        return cls(
            str(values["kind"]),
            float(values["feature_norm"]),
            str(values["center"]),
            mean,
            str(values.get("standardize", "none")),
            int(values.get("groups", 0)),
            scale,
        )

    def apply(self, x: Any) -> np.ndarray:
        """The preprocessed rows of a host array, float32 [N, D] (prediction)."""
        static = self.static
        out = _apply_jit(jnp.asarray(x), self.device_params(), static=static)
        return np.asarray(out)


def folds(static: tuple) -> bool:
    """The map is a per-row scale (no centring, no standardisation): a kernel may fold it."""
    return static[2] == "none" and static[3] == "none"


def group_ids(dim: int, groups: int) -> np.ndarray:
    """``floor(j G / D)`` for j < D: G contiguous groups of ``floor(D/G)`` or ``ceil(D/G)``."""
    return (np.arange(dim, dtype=np.int64) * groups) // dim


def group_sizes(dim: int, groups: int) -> np.ndarray:
    """The number of features of each of the G groups (``group_ids``)."""
    return np.bincount(group_ids(dim, groups), minlength=groups)


def group_means(x: jax.Array, groups: int) -> jax.Array:
    """``[c, G]``: each row's mean over each group (float32): a reshape when G divides D, else
    a one-hot matmul."""
    c, dim = x.shape
    if dim % groups == 0:
        return jnp.mean(x.reshape(c, groups, dim // groups), axis=2)
    onehot = np.zeros((dim, groups), np.float32)
    onehot[np.arange(dim), group_ids(dim, groups)] = 1.0
    onehot /= group_sizes(dim, groups)[None, :].astype(np.float32)
    return jnp.matmul(x, jnp.asarray(onehot), precision=jax.lax.Precision.HIGHEST)


def expand_groups(values: jax.Array, dim: int) -> jax.Array:
    """``[c, G] -> [c, D]``: each feature gets its group's value."""
    groups = values.shape[1]
    if dim % groups == 0:
        return jnp.repeat(values, dim // groups, axis=1, total_repeat_length=dim)
    return values[:, jnp.asarray(group_ids(dim, groups))]


def group_normalize(x32: jax.Array, groups: int) -> jax.Array:
    """``gn(x)`` of the module docstring, float32, on rows prescaled by powers of two (the map
    is scale-free, so this is exact in law and neither overflows nor underflows); a zero row
    stays zero."""
    u, _ = prescale(x32)
    dim = u.shape[1]
    mu = group_means(u, groups)
    centred = u - expand_groups(mu, dim)
    var = group_means(centred * centred, groups)
    ms = jnp.mean(u * u, axis=1)
    denom = jnp.sqrt(var + GROUP_EPS * ms[:, None])
    safe = jnp.where(denom > 0, denom, 1.0)
    out = centred / expand_groups(safe, dim)
    return jnp.where((ms > 0)[:, None], out, 0.0)


IDENTITY = Preprocessing("identity", float("inf"))


def times_pow2(x32: jax.Array, k: jax.Array) -> jax.Array:
    """``x 2^k`` per row, exactly: two multiplications by powers of two of at most 2^+-64 (each
    normal), cheaper than ``ldexp`` on a whole chunk."""
    half = k // 2
    one = jnp.ones(k.shape, jnp.float32)
    return x32 * jnp.ldexp(one, half)[:, None] * jnp.ldexp(one, k - half)[:, None]


def prescale(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(x 2^-e, e)`` per row, float32, with ``2^(e-1) <= max_j |x_j| < 2^e`` (``e = 0`` for a
    zero or non-finite row): an exact rescaling into [0.5, 1) that keeps every norm and scale of
    the row representable (entries near 1e38 or 1e-38 neither overflow nor underflow)."""
    x = x.astype(jnp.float32)
    big = jnp.max(jnp.abs(x), axis=1)
    _, e = jnp.frexp(jnp.where((big > 0) & jnp.isfinite(big), big, 1.0))
    e = jnp.where((big > 0) & jnp.isfinite(big), e, 0)
    return times_pow2(x, -e), e


def safe_norms(x: jax.Array) -> jax.Array:
    """``||x_i||`` in float32 [N] without overflow or underflow; NaN/inf rows give a non-finite
    norm (inf when the norm itself exceeds float32)."""
    scaled, e = prescale(x)
    norm = jnp.sqrt(jnp.sum(scaled * scaled, axis=1))
    return jnp.ldexp(norm, e)


def _relative_scale(norm: jax.Array, e: jax.Array, kind: str, radius: float) -> jax.Array:
    """``s 2^e``: the bound's scale of a row ``x = 2^e x'`` applied to ``x'`` (norm ``norm``)."""
    if kind == "identity":
        return jnp.ldexp(jnp.ones_like(norm), e)
    positive = norm > 0
    inv = radius / jnp.where(positive, norm, 1.0)
    if kind == "shrink":
        inv = jnp.minimum(jnp.ldexp(jnp.ones_like(norm), e), inv)
    return jnp.where(positive, inv, 0.0)


def finite_rows(x: jax.Array) -> jax.Array:
    """Bool [N]: the row holds no NaN/inf (after the cast to float32)."""
    return jnp.all(jnp.isfinite(x.astype(jnp.float32)), axis=1)


def row_exponents(x: jax.Array, big: jax.Array | None = None) -> jax.Array:
    """``e`` per row with ``2^(e-1) <= max_j |x_j| < 2^e`` (0 for a zero or non-finite row);
    ``big``: the rows' max abs, when known."""
    if big is None:
        big = jnp.max(jnp.abs(x.astype(jnp.float32)), axis=1)
    usable = (big > 0) & jnp.isfinite(big)
    _, e = jnp.frexp(jnp.where(usable, big, 1.0))
    return jnp.where(usable, e, 0)


EXTREME_EXPONENT = 60  # rows with entries beyond 2^+-60 are rescaled before folding


def needs_rescale(e: jax.Array) -> jax.Array:
    """True when a row's scale or squares could leave float32's range (``fold_factors``)."""
    return jnp.any(jnp.abs(e) > EXTREME_EXPONENT)


def rescaled(x: jax.Array, e: jax.Array) -> jax.Array:
    """``x 2^-e`` per row, exact, in ``x``'s dtype."""
    return times_pow2(x.astype(jnp.float32), -e).astype(x.dtype)


def fold_factors(
    x: jax.Array, static: tuple[str, float, str], e: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """``(a, ||x'||)`` for a map without centring, ``x' = a x``, so that a kernel can fold the
    scale ``a`` into its clip factor; one pass (the sum of squares). ``x`` must hold no entry
    beyond ``2^+-60``, else pass ``rescaled(x, e)`` with the rows' exponents ``e`` (which the
    shrink bound needs). Non-finite rows get a non-finite norm."""
    kind, radius = static[:2]
    norm = jnp.sqrt(jnp.sum(jnp.square(x.astype(jnp.float32)), axis=1))
    if kind == "identity":
        return jnp.ones_like(norm), norm
    e = jnp.zeros(norm.shape, jnp.int32) if e is None else e
    a = _relative_scale(norm, e, kind, radius)
    return a, jnp.where(jnp.isfinite(norm), a * norm, jnp.inf)


def relative_fold_factors(
    x: jax.Array, static: tuple[str, float, str]
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(a, ||x'||, e)`` with ``x' = a (x 2^-e)``, for a caller that applies the power of two
    itself (a kernel whose output is the size of x, which must not take a branch): the row max
    and the sum of squares in one pass; ``e = 0`` unless the chunk has entries beyond ``2^+-60``,
    and only then a second pass on the rescaled rows. Non-finite rows get a non-finite norm."""
    kind, radius = static[:2]
    x32 = x.astype(jnp.float32)
    big = jnp.max(jnp.abs(x32), axis=1)
    squares = jnp.sum(jnp.square(x32), axis=1)
    e = row_exponents(x32, big)
    norm, e = jax.lax.cond(
        needs_rescale(e),
        lambda: (jnp.sqrt(jnp.sum(jnp.square(times_pow2(x32, -e)), axis=1)), e),
        lambda: (jnp.sqrt(squares), jnp.zeros_like(e)),
    )
    a = jnp.ones_like(norm) if kind == "identity" else _relative_scale(norm, e, kind, radius)
    return a, jnp.where(jnp.isfinite(big), a * norm, jnp.inf), e


def rows32(x: jax.Array, params: Any, static: tuple) -> tuple[jax.Array, jax.Array]:
    """``(x', ||x'||)``: the preprocessed rows materialised in float32 and bounded as stored;
    ``params``: the map's traced arguments (``Preprocessing.device_params``).

    Each bound works on the row prescaled by a power of two (``prescale``), so no scale leaves
    float32's range. The result is measured again and scaled by ``min(1, r (1 - slack(D)) /
    ||x'||)``: whatever the rounding (``x - m`` can cancel when x is close to m), the row that
    enters a statistic has norm at most r. Non-finite rows give a non-finite norm.
    """
    kind, radius, center, standardize, groups = static
    u = x.astype(jnp.float32)
    if standardize == "group":
        u = group_normalize(u, groups)
    elif standardize == "private":
        m, s = params
        u = jnp.clip((_bounded(u, kind, radius) - m[None, :]) / s[None, :], -_CLIP, _CLIP)
    elif standardize == "public":
        m, s = params
        u = jnp.clip((u - m[None, :]) / s[None, :], -_CLIP, _CLIP)
    elif center == "public":
        u = u - params[None, :]
    elif center == "private":
        u = _bounded(u, kind, radius) - params[None, :]
    if kind == "identity":
        return u, jnp.where(finite_rows(x), safe_norms(u), jnp.inf)
    scaled, e = prescale(u)
    n = jnp.sqrt(jnp.sum(scaled * scaled, axis=1))
    out, norms = within_radius(_relative_scale(n, e, kind, radius)[:, None] * scaled, radius)
    return out, jnp.where(finite_rows(x), norms, jnp.inf)


def _bounded(u: jax.Array, kind: str, radius: float) -> jax.Array:
    """``bound(u)`` in float32, computed on the prescaled rows."""
    scaled, e = prescale(u)
    n1 = jnp.sqrt(jnp.sum(scaled * scaled, axis=1))
    return _relative_scale(n1, e, kind, radius)[:, None] * scaled


def within_radius(rows: jax.Array, radius: float) -> tuple[jax.Array, jax.Array]:
    """``(rows, norms)`` with each row measured on its float32 values and scaled by
    ``min(1, r (1 - slack(D)) / ||row||)``: norm at most r, whatever rounding came before."""
    norms = jnp.sqrt(jnp.sum(rows * rows, axis=1))
    limit = radius * (1.0 - slack(rows.shape[1]))
    fix = jnp.where(norms > limit, limit / jnp.where(norms > 0, norms, 1.0), 1.0)
    return rows * fix[:, None], norms * fix


def _apply_impl(x, params, static):
    return rows32(x, params, static)[0]


_apply_jit = jax.jit(_apply_impl, static_argnames=("static",))
