"""``Settings``: the base of every frozen, typed value a plan hands its run (and of the option
types): a frozen dataclass whose ``to_dict`` is its report (docs/architecture.md, "Methods").

``to_dict`` writes each field as JSON-able data: nested settings by their own ``to_dict``,
tuples as lists, infinities as the string ``"inf"``. A settings type that holds something else
(a method, a plan) defines its own ``to_dict``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    """Base of every plan's settings (module docstring)."""

    def to_dict(self) -> dict[str, object]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _plain(value: object) -> object:
    if isinstance(value, Settings):
        return value.to_dict()
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


__all__ = ["Settings"]
