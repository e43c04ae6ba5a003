"""Differentially private linear heads on cached embeddings (docs/architecture.md).

head = private_head.fit(train_x, train_y, num_classes=10, epsilon=4.0, delta=1e-6)
head.accuracy(test_x, test_y); head.privacy; head.save("head.npz")
"""

from private_head.api import fit
from private_head.head import PrivateHead, load
from private_head.kernel import clipped_gradient_sum, zero_init_class_sums
from private_head.methods import Method, available_methods, describe_options, register_method
from private_head.options import DatasetSize, Performance, Preprocess
from private_head.rows import Rows, open_rows
from private_head.selection import select

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
