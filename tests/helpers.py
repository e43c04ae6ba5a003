"""Helpers shared by several test modules."""

from __future__ import annotations

import h5py

from feature_extract import store


def store_contents(path) -> dict:
    """Every split's dataset bytes and attributes: equal iff two stores hold the same content."""
    with h5py.File(path, "r") as f:
        return {
            split: (
                {k: f[split][k][()].tobytes() for k in ("features", "labels", "ids")},
                {k: store._plain(v) for k, v in f[split].attrs.items()},
            )
            for split in f
        }
