"""What an extraction is asked for, checked without JAX: split requests and compute dtype names.

The command line checks its arguments with these (and ``pipeline.check_batch_size``,
``preprocess.with_decode``) before it imports JAX, so a usage error returns at once; ``extract``
checks the same values with the same functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

COMPUTE_DTYPE_NAMES = ("bfloat16", "float16", "float32")


@dataclass(frozen=True)
class SplitRequest:
    """Store group ``name`` filled from the source split string ``spec`` (e.g. ``train[:90%]``)."""

    name: str
    spec: str


def parse_splits(splits: str | Sequence[str] | Mapping[str, str]) -> list[SplitRequest]:
    """``"train,test"``, ``["train", "val=train[90%:]"]`` or ``{"val": "train[90%:]"}``.

    A store group name may not contain ``/`` or ``:`` (``file.h5:split`` addressing): give such a
    split string a name with ``name=spec``.
    """
    if isinstance(splits, Mapping):
        items = list(splits.items())
    else:
        parts = splits.split(",") if isinstance(splits, str) else list(splits)
        items = [
            (p.partition("=")[0], p.partition("=")[2]) if "=" in p else (p, p)
            for p in (q.strip() for q in parts)
            if p
        ]
    requests = [SplitRequest(name.strip(), spec.strip()) for name, spec in items]
    if not requests:
        raise ValueError("no splits requested; e.g. --splits train,test")
    for r in requests:
        if not r.name or not r.spec or any(c in r.name for c in "/:"):
            raise ValueError(
                f"cannot store split {r.spec!r} under the name {r.name!r}: names "
                "must be non-empty without '/' or ':'; write name=spec, e.g. "
                "val=train[90%:]"
            )
    names = [r.name for r in requests]
    if len(set(names)) != len(names):
        raise ValueError(f"split names repeat: {names}")
    return requests
