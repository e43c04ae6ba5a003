"""Bracketed root finding that returns the privacy-conservative side of the root."""

from __future__ import annotations

from collections.abc import Callable

from scipy.optimize import brentq

_TINY = 1e-300


def conservative_root(
    g: Callable[[float], float],
    x0: float,
    *,
    decreasing: bool,
    x_min: float,
    x_max: float,
    rtol: float,
    impossible: str,
    factor: float = 2.0,
) -> float:
    """Solve g(x) = 0 for a monotone g and return a root x with g(x) <= 0.

    "g(x) <= 0" is the acceptable side (e.g. delta(x) - target <= 0). A bracket is grown
    geometrically (by `factor`) from x0 inside [x_min, x_max]; Brent's method finds the root to
    relative tolerance rtol, and the result is then moved onto the acceptable side. If no bracket
    exists inside [x_min, x_max] a ValueError with the message `impossible` is raised. Values of
    g are cached, so an expensive g is evaluated once per point.
    """
    sign = -1.0 if decreasing else 1.0
    cache: dict[float, float] = {}

    def g_cached(x: float) -> float:
        if x not in cache:
            cache[x] = g(x)
        return cache[x]

    def h(x: float) -> float:  # increasing in x
        return sign * g_cached(x)

    lo = hi = x0
    if h(x0) > 0:
        while h(lo) > 0:
            hi, lo = lo, lo / factor
            if lo < x_min:
                raise ValueError(impossible)
    else:
        while h(hi) <= 0:
            lo, hi = hi, hi * factor
            if hi > x_max:
                raise ValueError(impossible)
    x = brentq(h, lo, hi, xtol=_TINY, rtol=rtol)
    ok_end = hi if decreasing else lo  # this bracket end satisfies g <= 0
    step = abs(x) * rtol
    while g_cached(x) > 0:
        x = x + step if decreasing else x - step
        step *= 2
        if (x >= ok_end) if decreasing else (x <= ok_end):
            return ok_end
    return float(x)
