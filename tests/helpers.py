"""Helpers shared by several test modules."""

from __future__ import annotations

import h5py

from feature_extract import store


def store_contents(path) -> dict:
    """Every split's dataset bytes and attributes: equal iff two stores hold the same content.

    The bookkeeping attributes (``store.INTERNAL_ATTRS``: the random writer token) are left out;
    they differ between two runs by design.
    """
    with h5py.File(path, "r") as f:
        return {
            split: (
                {k: f[split][k][()].tobytes() for k in ("features", "labels", "ids")},
                {
                    k: store._plain(v)
                    for k, v in f[split].attrs.items()
                    if k not in store.INTERNAL_ATTRS
                },
            )
            for split in f
        }
