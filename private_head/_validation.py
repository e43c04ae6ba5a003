"""Every check of a value the caller gives: each failure is a ValueError that names the value and
says what is accepted (docs/architecture.md, "What fit does").

The option types call these from ``validate`` (their types are coerced by ``_options``); ``fit``
and ``select`` check the budget, the label space, the labels, the feature dtype and a public mean
with them, and the Gram methods their memory before the run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from feature_extract import store

HALF_DTYPES = ("float16", "bfloat16")
GRAM_COPIES = 6  # the Gram, its noise, the eigenvectors, their products and eigh's workspace


# ------------------------------------------------------------------------------------ numbers
def check_positive(name: str, value: float | None, *, finite: bool = True) -> None:
    """``value`` is None or a positive (finite) number."""
    if value is not None and not (value > 0 and (not finite or math.isfinite(value))):
        raise ValueError(
            f"{name} must be a positive{' finite' if finite else ''} number, got {value!r}"
        )


def check_non_negative(name: str, value: float) -> None:
    """``value`` is a finite number >= 0."""
    if not 0 <= value < math.inf:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def check_count(name: str, value: int | None) -> None:
    """``value`` is None or an integer >= 1."""
    if value is not None and value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_fraction(name: str, value: float) -> float:
    """``value`` lies strictly inside (0, 1) (a share of a budget or of the rows)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ValueError(f"{name} must lie in (0, 1), got {value!r}")
    return float(value)


def check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    """``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


# ------------------------------------------------------------------------------------- budget
def check_budget(method: str, private: bool, epsilon: Any, delta: Any) -> tuple[float, float]:
    """``epsilon = inf`` exactly for a method that is not private; delta in (0, 1)."""
    try:
        eps, dlt = float(epsilon), float(delta)
    except (TypeError, ValueError):
        raise ValueError(f"epsilon and delta must be numbers, got {epsilon!r}, {delta!r}") from None
    if not eps > 0:
        raise ValueError(f"epsilon must be > 0 (math.inf only for method='nonprivate'), got {eps}")
    if math.isinf(eps) == private:
        raise ValueError(
            "epsilon=math.inf is accepted only with method='nonprivate', and 'nonprivate' needs "
            f"epsilon=math.inf (got method={method!r}, epsilon={eps})."
        )
    if not 0 < dlt < 1:
        raise ValueError(f"delta must lie in (0, 1), got {dlt}")
    return eps, dlt


# --------------------------------------------------------------------------------------- data
def check_num_classes(num_classes: Any) -> int:
    """``num_classes`` is given (the label space is public) and is an integer >= 2."""
    if num_classes is None:
        raise ValueError(
            "num_classes is required: the label space is public and must come from "
            "the dataset's metadata or the caller, never from the private labels."
        )
    if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    return int(num_classes)


def check_labels(labels: Any, num_rows: int, num_classes: int) -> np.ndarray:
    """Labels as int32 [N] in ``[0, num_classes)``."""
    if labels is None:
        raise ValueError("labels are required with array features (a store path brings its own)")
    array = np.asarray(labels)
    if array.shape != (num_rows,):
        raise ValueError(
            f"shape mismatch: {num_rows} feature rows but labels of shape "
            f"{array.shape}; need one label per row"
        )
    store.check_labels(array, num_classes)
    return array.astype(np.int32)


def check_feature_dtype(dtype: Any, feature_norm: float) -> None:
    """Floating-point features whose dtype can hold the radius ``feature_norm``."""
    dtype = np.dtype(dtype)
    if dtype.kind != "f" and dtype.name != "bfloat16":
        raise ValueError(f"features must be floating point, got dtype {dtype}")
    if dtype.name in HALF_DTYPES and feature_norm >= float(jnp.finfo(dtype).max):
        raise ValueError(
            f"feature_norm={feature_norm} overflows {dtype.name} (max "
            f"{float(jnp.finfo(dtype).max)}); use a smaller feature_norm or float32."
        )


def check_public_mean(mean: Any, dim: int) -> np.ndarray:
    """A public mean as float32 [D] of finite values."""
    array = np.asarray(mean, dtype=np.float32)
    if array.shape != (dim,):
        raise ValueError(f"public_mean must have shape ({dim},), got {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("public_mean holds NaN or infinite values")
    return array


def check_public_scale(scale: Any, dim: int) -> np.ndarray:
    """A public standardisation scale as float32 [D] of positive finite values whose
    reciprocals are finite in float32."""
    array = np.asarray(scale, dtype=np.float32)
    if array.shape != (dim,):
        raise ValueError(f"public_scale must have shape ({dim},), got {array.shape}")
    if not (np.isfinite(array).all() and (array >= np.finfo(np.float32).tiny).all()):
        raise ValueError("public_scale must hold positive finite values (float32 normal numbers)")
    return array


def gram_bytes(dim: int) -> int:
    """The memory the algebra of a D x D Gram needs: ``GRAM_COPIES`` float32 D x D matrices."""
    return GRAM_COPIES * 4 * dim * dim


def gram_fits(dim: int, budget_bytes: int) -> bool:
    """Whether the algebra of a D x D Gram (``gram_bytes``) fits the memory budget."""
    return gram_bytes(dim) <= budget_bytes


def check_gram_memory(dim: int, budget_bytes: int, method: str) -> None:
    """A D x D Gram whose algebra fits the memory budget (``gram_fits``), refused with what to
    do before XLA runs out of memory."""
    need = gram_bytes(dim)
    if need > budget_bytes:
        raise ValueError(
            f"{method} works on a {dim} x {dim} Gram matrix: about {need / 2**30:.1f} GiB of "
            f"device memory, over the budget of {budget_bytes / 2**30:.1f} GiB. Reduce D (e.g. a "
            "projection fitted on public data), raise max_device_bytes on a larger device, or use "
            "a method without a Gram (single_step, dp_gd, dp_prototypes)"
        )


__all__ = [
    "check_budget",
    "check_choice",
    "check_count",
    "check_feature_dtype",
    "check_fraction",
    "check_gram_memory",
    "check_labels",
    "check_non_negative",
    "check_num_classes",
    "check_positive",
    "check_public_mean",
    "check_public_scale",
    "gram_bytes",
    "gram_fits",
]
