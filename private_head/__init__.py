"""Differentially private linear heads on cached embeddings (docs/architecture.md).

head = private_head.fit(train_x, train_y, num_classes=10, epsilon=4.0, delta=1e-6)
head.accuracy(test_x, test_y); head.privacy; head.save("head.npz")
"""

from private_head._api import fit
from private_head._head import PrivateHead, load
from private_head._kernel import clipped_gradient_sum, zero_init_class_sums
from private_head._methods import Method, available_methods, describe_options, register_method
from private_head._options import DatasetSize, Performance, Preprocess
from private_head._rows import Rows, open_rows
from private_head._selection import select

__all__ = [
    "DatasetSize",
    "Method",
    "Performance",
    "Preprocess",
    "PrivateHead",
    "Rows",
    "available_methods",
    "clipped_gradient_sum",
    "describe_options",
    "fit",
    "load",
    "open_rows",
    "register_method",
    "select",
    "zero_init_class_sums",
]
