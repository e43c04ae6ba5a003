"""feature_extract: cache embeddings of a frozen backbone on a dataset in an HDF5 feature store.

``__all__`` is the public API: ``extract``, ``image_arrays`` (images in memory as a dataset),
``load_backbone`` and ``list_backbones``, and the store's reader and writer (``read_split``,
``split_info``, ``write_split``, ``SplitReader``, ``SplitWriter``, ``StoreError``, from
``feature_extract.store``). They are imported lazily, so that ``import feature_extract.store``
(the reader used by ``private_head``) loads only numpy and h5py.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "SplitReader",
    "SplitWriter",
    "StoreError",
    "extract",
    "image_arrays",
    "list_backbones",
    "load_backbone",
    "read_split",
    "split_info",
    "write_split",
]

_LAZY = {
    "extract": "feature_extract.extraction",
    "image_arrays": "feature_extract.arrays",
    "load_backbone": "feature_extract.registry",
    "list_backbones": "feature_extract.registry",
    **{
        name: "feature_extract.store"
        for name in (
            "SplitReader",
            "SplitWriter",
            "StoreError",
            "read_split",
            "split_info",
            "write_split",
        )
    },
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'feature_extract' has no attribute {name!r}")
