"""Typed, validated options: the shared option types of ``fit`` and the base of every method's.

Each option type is a frozen, keyword-only dataclass; its fields carry their help text (and
choices) in ``metadata``, so the CLI flags, ``--help`` and the README's option tables are generated
from the same definitions. Construction checks every value's type (``steps="abc"`` is an error
that says so) and the type's own constraints (``validate``). ``fit(**options)`` routes each
keyword to the type that declares it (``route``): the shared types below or the method's own; a
keyword no type declares is an error that lists what is accepted.

Shared types (they apply to every method):

- ``Preprocess``: the per-row map (``preprocessing``): the bound, centring or standardisation, and
  the budget shares of the private mean and the private standardisation;
- ``DatasetSize``: the size convention. ``dataset_size=n`` declares a public size n, used as a
  constant divisor (it need not equal the true row count; the guarantee does not depend on it).
  Without it, a noisy count ``N + N(0, (1 / mu_n)^2)`` (sensitivity 1) is released first with
  ``count_budget_fraction`` of mu^2, rounded and floored at 1, and used as the divisor;
- ``Performance`` (``_rows``): memory budget and chunk size, which never change the mechanism.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from private_head._settings import Settings
from private_head._validation import check_count, check_fraction, check_positive


def option(
    default: Any, help: str, *, choices: tuple | None = None, shown: str | None = None
) -> Any:
    """A dataclass field with its help text, allowed values, and how its default reads in the
    docs when the value itself does not say it (``shown``, e.g. "the rule")."""
    return field(default=default, metadata={"help": help, "choices": choices, "shown": shown})


@dataclass(frozen=True, kw_only=True)
class Options(Settings):
    """Base of every option type (module docstring); ``to_dict`` (from ``Settings``) gives the
    values as JSON-able data."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = _coerce(f.name, getattr(self, f.name), hints[f.name], f.metadata)
            object.__setattr__(self, f.name, value)
        self.validate()

    def validate(self) -> None:
        """Constraints between or on values; raise ValueError."""

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def describe(cls) -> list[dict[str, Any]]:
        """``[{name, type, default, help, choices}]`` for the CLI and the README."""
        hints = typing.get_type_hints(cls)
        return [
            {
                "name": f.name,
                "type": _base_type(hints[f.name]),
                "optional": _optional(hints[f.name]),
                "default": f.default,
                "help": f.metadata.get("help", ""),
                "choices": f.metadata.get("choices"),
                "shown": f.metadata.get("shown") or repr(f.default),
            }
            for f in dataclasses.fields(cls)
        ]


def _optional(hint: Any) -> bool:
    return type(None) in typing.get_args(hint)


def _base_type(hint: Any) -> type:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0]
    return hint


def _coerce(name: str, value: Any, hint: Any, metadata: Mapping[str, Any]) -> Any:
    if value is None:
        if _optional(hint):
            return None
        raise ValueError(f"option {name} may not be None")
    kind = _base_type(hint)
    if kind is bool:
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
    elif kind is int:
        if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
            return int(value)
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            return int(value)
    elif kind is float:
        if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
            value, (bool, np.bool_)
        ):
            value = float(value)
            if math.isnan(value):
                raise ValueError(f"option {name} must be a number, got nan")
            return value
    elif kind is str:
        if isinstance(value, str):
            choices = metadata.get("choices")
            if choices and value not in choices:
                raise ValueError(f"option {name} must be one of {list(choices)}, got {value!r}")
            return value
    else:
        return value
    raise ValueError(f"option {name} must be {_type_text(hint)}, got {value!r}")


def _type_text(hint: Any) -> str:
    kind = _base_type(hint)
    text = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        kind, kind.__name__
    )
    return text + (" or None" if _optional(hint) else "")


@dataclass(frozen=True, kw_only=True)
class Preprocess(Options):
    """The per-row map of every training row (see ``private_head._preprocessing``)."""

    normalize: bool = option(
        True,
        "scale every row to norm feature_norm (false: only shrink rows longer than feature_norm)",
    )
    feature_norm: float = option(1.0, "radius r: every preprocessed row has norm <= r")
    center: str = option(
        "none",
        "subtract a mean before bounding: none, public (the "
        "public_mean argument) or private (a noisy mean, charged)",
        choices=("none", "public", "private"),
    )
    center_budget_fraction: float = option(0.1, "share of mu^2 spent on the private mean")
    standardize: str = option(
        "auto",
        "standardise the features before bounding: none; group (per-example group normalisation, "
        "free); private (noisy per-group mean and second moment, charged); public (the "
        "public_mean and public_scale arguments); auto: private where the features declare "
        "their groups (a store's feature_groups, or groups=), else none",
        choices=("none", "group", "private", "public", "auto"),
    )
    groups: int | None = option(
        None,
        "G contiguous feature groups of standardize (1 <= G <= D); given, it declares the "
        "features' groups to standardize=auto",
        shown="the store's feature_groups, else D",
    )
    standardize_budget_fraction: float = option(
        0.05, "share of mu^2 spent on the private standardisation"
    )

    def validate(self) -> None:
        check_positive("feature_norm", self.feature_norm)
        check_fraction("center_budget_fraction", self.center_budget_fraction)
        check_fraction("standardize_budget_fraction", self.standardize_budget_fraction)
        if self.groups is not None and self.groups < 1:
            raise ValueError(f"groups must be at least 1, got {self.groups}")
        if self.center != "none" and self.standardize not in ("none", "auto"):
            raise ValueError(
                f"center={self.center!r} with standardize={self.standardize!r}: standardisation "
                "centres the features itself; choose one (standardize='none' to centre only)"
            )


@dataclass(frozen=True, kw_only=True)
class DatasetSize(Options):
    """The dataset-size convention (module docstring)."""

    dataset_size: int | None = option(
        None, "a public dataset size, used as the divisor", shown="a noisy count, charged"
    )
    count_budget_fraction: float = option(0.01, "share of mu^2 spent on the noisy count")

    def validate(self) -> None:
        check_count("dataset_size", self.dataset_size)
        check_fraction("count_budget_fraction", self.count_budget_fraction)


@dataclass(frozen=True, kw_only=True)
class Performance(Options):
    """Memory and chunking; never changes the mechanism."""

    max_device_bytes: int | None = option(
        None, "memory budget for the rows and a pass", shown="from the device's free memory"
    )
    chunk_rows: int | None = option(None, "rows per chunk of a pass", shown="from the budget")

    def validate(self) -> None:
        check_count("max_device_bytes", self.max_device_bytes)
        check_count("chunk_rows", self.chunk_rows)


SHARED = (Preprocess, DatasetSize, Performance)


class Routed(NamedTuple):
    """``fit``'s keywords sorted into the method's options and the shared types."""

    method: Options
    preprocess: Preprocess
    size: DatasetSize
    performance: Performance


def route(
    method: str, method_options: type[Options], given: Mapping[str, Any], *, shared: bool = True
) -> Routed:
    """Sort ``fit``'s keywords into the method's options and the shared types; refuse any
    keyword none of them declares (``shared=False``: only the method's own options)."""
    given = dict(given)
    kinds = (method_options, *SHARED) if shared else (method_options,)
    buckets: dict[type[Options], dict[str, Any]] = {t: {} for t in kinds}
    for name in list(given):
        for kind in buckets:
            if name in kind.names():
                buckets[kind][name] = given.pop(name)
                break
    if given:
        also = (
            f", and every method accepts {sorted(n for t in SHARED for n in t.names())}"
            if shared
            else " (options shared by every candidate are arguments of select itself)"
        )
        raise ValueError(
            f"method {method!r} does not take option(s) {sorted(given)}; it accepts "
            f"{sorted(method_options.names())}{also}"
        )
    built = {kind: kind(**values) for kind, values in buckets.items()}
    if not shared:
        built.update({t: t() for t in SHARED})
    return Routed(built[method_options], built[Preprocess], built[DatasetSize], built[Performance])


@dataclass(frozen=True, kw_only=True)
class NoOptions(Options):
    """The options of a method that has none of its own (e.g. the selection: its settings are its
    constructor's)."""


__all__ = [
    "SHARED",
    "DatasetSize",
    "NoOptions",
    "Options",
    "Performance",
    "Preprocess",
    "Routed",
    "option",
    "route",
]
