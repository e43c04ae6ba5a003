"""Files written whole or not at all: under a temporary name in the same folder, then renamed
into place (``os.replace`` is atomic), so a crash or Ctrl-C never leaves half a file."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np


@contextmanager
def replacing(path: str, suffix: str = "") -> Iterator[str]:
    """The temporary path ``<folder>/.<name>.tmp-<pid><suffix>`` to write; renamed onto ``path``
    when the block ends normally, removed otherwise (``suffix``: what a writer appends anyway,
    as ``np.save`` does ``.npy``)."""
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.tmp-{os.getpid()}{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text_atomically(path: str, text: str) -> None:
    """Write ``text`` to ``path`` (module docstring)."""
    with replacing(path) as tmp, open(tmp, "w") as f:
        f.write(text)


def write_array_atomically(path: str, array: np.ndarray) -> None:
    """``np.save(path, array)`` (module docstring)."""
    with replacing(path, ".npy") as tmp:
        np.save(tmp, array, allow_pickle=False)


__all__ = ["replacing", "write_array_atomically", "write_text_atomically"]
