"""Files written whole or not at all: under a temporary name in the same folder, then renamed
into place (``os.replace`` is atomic), so a crash or Ctrl-C never leaves half a file."""

from __future__ import annotations

import os

import numpy as np


def _temporary(path: str, suffix: str = "") -> str:
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.tmp-{os.getpid()}{suffix}")


def write_text_atomically(path: str, text: str) -> None:
    """Write ``text`` to ``path`` (module docstring)."""
    tmp = _temporary(path)
    try:
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_array_atomically(path: str, array: np.ndarray) -> None:
    """``np.save(path, array)`` (module docstring)."""
    tmp = _temporary(path, ".npy")
    try:
        np.save(tmp, array, allow_pickle=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


__all__ = ["write_array_atomically", "write_text_atomically"]
