"""Differentially private linear heads on cached embeddings (docs/architecture.md).

    head = private_head.fit(train_x, train_y, num_classes=10, epsilon=4.0, delta=1e-6)
    head.accuracy(test_x, test_y); head.privacy; head.save("head.npz")

``__all__`` is the public API: training and loading heads, the methods' registry and options,
and what a method author needs (``Method``, its ``Plan`` of ``PlannedRelease`` values, the
``Releaser`` that adds their noise, the ``Rows`` and the statistics a run sums over them; see the
README, "Adding a method"). ``private_head.testing`` exports the contract every method keeps
(``check_method``); ``python -m private_head`` is the command line (``private_head.cli``) and
``python -m private_head.audit`` the empirical audit. Every other module is internal (its name
starts with an underscore).
"""

from accounting import BudgetExceededError
from private_head._api import fit, select
from private_head._budget import Allowance
from private_head._head import PrivateHead, load
from private_head._method import Context, Fitted, Method, PublicInfo
from private_head._options import DatasetSize, Options, Performance, Preprocess, option
from private_head._plan import Plan, PlannedRelease
from private_head._registry import available_methods, describe_options, register_method
from private_head._release import Releaser
from private_head._rows import Rows
from private_head._settings import Settings
from private_head._statistics import (
    Chunk,
    ClassSumsAndCounts,
    GradientSums,
    Gram,
    GramAndSums,
    RowSum,
    Statistic,
    ZeroInitSums,
)

__all__ = [
    "Allowance",
    "BudgetExceededError",
    "Chunk",
    "ClassSumsAndCounts",
    "Context",
    "DatasetSize",
    "Fitted",
    "GradientSums",
    "Gram",
    "GramAndSums",
    "Method",
    "Options",
    "Performance",
    "Plan",
    "PlannedRelease",
    "Preprocess",
    "PrivateHead",
    "PublicInfo",
    "Releaser",
    "RowSum",
    "Rows",
    "Settings",
    "Statistic",
    "ZeroInitSums",
    "available_methods",
    "describe_options",
    "fit",
    "load",
    "option",
    "register_method",
    "select",
]
