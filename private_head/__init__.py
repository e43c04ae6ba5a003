"""Differentially private linear heads on cached embeddings (docs/architecture.md).

    head = private_head.fit(train_x, train_y, num_classes=10, epsilon=4.0, delta=1e-6)
    head.accuracy(test_x, test_y); head.privacy; head.save("head.npz")

``__all__`` is the public API: training and loading heads, the scikit-learn estimator
(``DPLinearProbe``, from ``private_head.sklearn``), the methods' registry and options, and what
a method author needs (``Method``, its ``Plan`` of ``PlannedRelease`` values, the
``Releaser`` that adds their noise, the ``Rows`` and the statistics a run sums over them; see
the README, "Adding a method"). ``private_head.testing`` exports the contract every method
keeps (``check_method``); ``python -m private_head`` is the command line (``private_head.cli``)
and ``python -m private_head.audit`` the empirical audit. Every other module is internal (its
name starts with an underscore).

The names are imported on first use, so that ``python -m private_head`` checks its arguments (and
refuses bad ones) before JAX is imported.
"""

from __future__ import annotations

from typing import Any

_STATISTICS = (
    "Chunk",
    "ClassSumsAndCounts",
    "GradientSums",
    "Gram",
    "GramAndSums",
    "RowSum",
    "Statistic",
    "ZeroInitSums",
)
_LAZY = {
    "Allowance": "private_head._budget",
    "BudgetExceededError": "accounting",
    "Context": "private_head._method",
    "DPLinearProbe": "private_head.sklearn",
    "DatasetSize": "private_head._options",
    "Fitted": "private_head._method",
    "Method": "private_head._method",
    "Options": "private_head._options",
    "Performance": "private_head._options",
    "Plan": "private_head._plan",
    "PlannedRelease": "private_head._plan",
    "Preprocess": "private_head._options",
    "PrivateHead": "private_head._head",
    "PublicInfo": "private_head._method",
    "Releaser": "private_head._release",
    "Rows": "private_head._rows",
    "Settings": "private_head._settings",
    "available_methods": "private_head._registry",
    "describe_options": "private_head._registry",
    "fit": "private_head._api",
    "load": "private_head._head",
    "option": "private_head._options",
    "register_method": "private_head._registry",
    "select": "private_head._api",
    **{name: "private_head._statistics" for name in _STATISTICS},
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'private_head' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
