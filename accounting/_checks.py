"""Validation of accounting arguments: each failure is a ValueError saying what is wrong.

Also the default PLD discretisation, so that the command line can show it without importing
dp-accounting. Imports nothing heavier than numpy.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

DEFAULT_DISCRETIZATION = 1e-4  # PLD value discretisation interval


def check_epsilon(epsilon: float, *, allow_inf: bool = True) -> float:
    """Return epsilon as a float; it must be > 0 (math.inf allowed when allow_inf)."""
    eps = _as_float("epsilon", epsilon)
    if math.isnan(eps) or eps <= 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon!r}")
    if math.isinf(eps) and not allow_inf:
        raise ValueError("epsilon must be finite here, got inf")
    return eps


def check_delta(delta: float) -> float:
    """Return delta as a float; it must lie strictly between 0 and 1."""
    d = _as_float("delta", delta)
    if not 0.0 < d < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    return d


def check_steps(steps: int, name: str = "steps") -> int:
    """Return steps as an int; it must be an integer >= 1 (a float such as 2.0 is refused)."""
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral):
        raise ValueError(f"{name} must be an integer >= 1, got {steps!r} ({type(steps).__name__})")
    if steps < 1:
        raise ValueError(f"{name} must be >= 1, got {steps}")
    return int(steps)


def check_sampling_rate(rate: float) -> float:
    """Return the Poisson sampling rate q as a float; it must lie in (0, 1]."""
    q = _as_float("sampling_rate", rate)
    if not 0.0 < q <= 1.0:
        raise ValueError(f"sampling_rate must be in (0, 1], got {rate!r}")
    return q


def check_nonnegative(name: str, value: float) -> float:
    """Return value as a float; it must be >= 0 (math.inf allowed, nan refused)."""
    v = _as_float(name, value)
    if math.isnan(v) or v < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return v


def check_positive_finite(name: str, value: float) -> float:
    """Return value as a float; it must be finite and > 0."""
    v = _as_float(name, value)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return v


def _as_float(name: str, value: float) -> float:
    """float(value) for a real scalar (Python, NumPy or JAX 0-d); bools and strings are refused."""
    if isinstance(value, (bool, np.bool_, str, bytes)) or np.ndim(value) != 0:
        raise ValueError(f"{name} must be a real number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {value!r}") from None
