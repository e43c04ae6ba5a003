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
) -> float:
    """Solve g(x) = 0 for a monotone g and return a root x with g(x) <= 0.

    "g(x) <= 0" is the acceptable side (e.g. delta(x) - target <= 0). A bracket is grown
    geometrically (factor 2) from x0 inside [x_min, x_max]; Brent's method finds the root to
    relative tolerance rtol, and the result is then moved onto the acceptable side. If no bracket
    exists inside [x_min, x_max] a ValueError with the message `impossible` is raised.
    """
    sign = -1.0 if decreasing else 1.0

    def h(x: float) -> float:  # increasing in x
        return sign * g(x)

    lo = hi = x0
    if h(x0) > 0:
        while h(lo) > 0:
            hi, lo = lo, lo / 2
            if lo < x_min:
                raise ValueError(impossible)
    else:
        while h(hi) <= 0:
            lo, hi = hi, hi * 2
            if hi > x_max:
                raise ValueError(impossible)
    x = brentq(h, lo, hi, xtol=_TINY, rtol=rtol)
    ok_end = hi if decreasing else lo  # this bracket end satisfies g <= 0
    step = abs(x) * rtol
    while g(x) > 0:
        x = x + step if decreasing else x - step
        step *= 2
        if (x >= ok_end) if decreasing else (x <= ok_end):
            return ok_end
    return float(x)
