"""Differentially private linear heads on cached embeddings (DESIGN.md section 5).

head = private_head.fit(train_x, train_y, num_classes=10, epsilon=4.0, delta=1e-6)
head.accuracy(test_x, test_y); head.privacy; head.save("head.npz")
"""

import importlib.util

from private_head.api import fit
from private_head.config import FitConfig
from private_head.data import TrainData
from private_head.head import PrivateHead, load
from private_head.kernel import clipped_gradient_sum
from private_head.methods import available_methods, register_method

__all__ = [
    "FitConfig",
    "PrivateHead",
    "TrainData",
    "available_methods",
    "clipped_gradient_sum",
    "fit",
    "load",
    "register_method",
]

if importlib.util.find_spec("private_head.selection") is not None:  # issue 6, when present
    from private_head.selection import select

    __all__ += ["select"]
