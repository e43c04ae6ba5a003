"""dp-accounting events: the Gaussian ones built and checked, any one's GDP mu, and each as plain
JSON-able data (and back), so that a report states exactly what was composed.

An event is the privacy of a release as a value (dp-accounting's ``DpEvent``): ``count`` draws of
a statistic of L2 sensitivity C plus N(0, (sigma C)^2) noise are ``gaussian_event(sigma, count)``,
that is ``SelfComposed(Gaussian(sigma), count)``, which is exactly ``sqrt(count) / sigma``-GDP.
``event_to_dict`` writes an event structurally, e.g.

    {"type": "self_composed", "count": 3, "event": {"type": "gaussian", "noise_multiplier": 2.0}}

(the type is the class name without ``DpEvent``, in snake case, and the fields are the event's
own, nested events as dicts); floats are written exactly, so ``event_from_dict`` rebuilds the
same event and a report re-accounts to exactly the epsilon it states.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import attr
import dp_accounting
from dp_accounting import dp_event

from accounting._checks import check_nonnegative, check_steps

_SUFFIX = "DpEvent"


def gaussian_event(noise_multiplier: float, count: int = 1) -> dp_accounting.DpEvent:
    """``count`` Gaussian releases of noise multiplier sigma (noise std / sensitivity):
    ``Gaussian(sigma)``, self-composed when ``count > 1``; sigma 0 is an infinite privacy loss."""
    sigma = check_nonnegative("noise_multiplier", noise_multiplier)
    count = check_steps(count, "count")
    event = dp_accounting.GaussianDpEvent(sigma)
    return event if count == 1 else dp_accounting.SelfComposedDpEvent(event, count)


def gaussian_event_mu(event: dp_accounting.DpEvent) -> float | None:
    """GDP mu of an event built only from Gaussian (and no-op) events, else None.

    ``Gaussian(s) -> 1/s``; ``SelfComposed(e, n) -> sqrt(n) mu(e)``; ``Composed(e_1..e_k) ->
    sqrt(sum mu(e_j)^2)``; ``NoOp -> 0``.
    """
    if isinstance(event, dp_accounting.NoOpDpEvent):
        return 0.0
    if isinstance(event, dp_accounting.GaussianDpEvent):
        return math.inf if event.noise_multiplier == 0 else 1.0 / event.noise_multiplier
    if isinstance(event, dp_accounting.SelfComposedDpEvent):
        inner = gaussian_event_mu(event.event)
        return None if inner is None else math.sqrt(event.count) * inner
    if isinstance(event, dp_accounting.ComposedDpEvent):
        parts = [gaussian_event_mu(e) for e in event.events]
        if any(p is None for p in parts):
            return None
        return math.sqrt(math.fsum(p * p for p in parts))
    return None


def check_event(event: Any) -> dp_accounting.DpEvent:
    """``event`` when it is a DpEvent whose Gaussian noise multipliers are >= 0, sampling
    probabilities in [0, 1] and self-composition counts integers >= 1 (a NaN would otherwise
    compose to a NaN epsilon, which no budget check refuses); a ValueError otherwise."""
    if not isinstance(event, dp_accounting.DpEvent):
        raise ValueError(f"event must be a dp_accounting.DpEvent, got {type(event).__name__}")
    if isinstance(event, dp_accounting.GaussianDpEvent):
        check_nonnegative("noise_multiplier", event.noise_multiplier)
    elif isinstance(event, dp_accounting.PoissonSampledDpEvent):
        q = check_nonnegative("sampling_probability", event.sampling_probability)
        if q > 1:
            raise ValueError(f"sampling_probability must be in [0, 1], got {q}")
        check_event(event.event)
    elif isinstance(event, dp_accounting.SelfComposedDpEvent):
        check_steps(event.count, "count")
        check_event(event.event)
    elif isinstance(event, dp_accounting.ComposedDpEvent):
        for part in event.events:
            check_event(part)
    return event


def _type_name(cls: type) -> str:
    """``PoissonSampledDpEvent`` -> ``poisson_sampled``."""
    words = r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])"
    return re.sub(words, "_", cls.__name__.removesuffix(_SUFFIX)).lower()


_TYPES = {
    _type_name(cls): cls
    for cls in vars(dp_event).values()
    if isinstance(cls, type) and issubclass(cls, dp_event.DpEvent) and cls is not dp_event.DpEvent
}


def event_to_dict(event: dp_accounting.DpEvent) -> dict[str, Any]:
    """The event as JSON-able data (module docstring); infinities as the string ``"inf"``."""
    out: dict[str, Any] = {"type": _type_name(type(event))}
    for name, value in attr.asdict(event, recurse=False).items():
        out[name] = _plain(value)
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, dp_accounting.DpEvent):
        return event_to_dict(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def event_from_dict(data: Mapping[str, Any]) -> dp_accounting.DpEvent:
    """The event ``event_to_dict`` wrote (a ValueError for an unknown type or field)."""
    fields = dict(data)
    kind = fields.pop("type", None)
    if kind not in _TYPES:
        raise ValueError(f"unknown event type {kind!r}; known: {sorted(_TYPES)}")
    cls = _TYPES[kind]
    try:
        return cls(**{name: _event_value(value) for name, value in fields.items()})
    except TypeError as err:
        raise ValueError(
            f"a {kind!r} event cannot have the fields {sorted(fields)}: {err}"
        ) from err


def _event_value(value: Any) -> Any:
    if isinstance(value, Mapping) and "type" in value:
        return event_from_dict(value)
    if isinstance(value, list):
        return [_event_value(v) for v in value]
    if value in ("inf", "-inf"):
        return float(value)
    return value


__all__ = [
    "check_event",
    "event_from_dict",
    "event_to_dict",
    "gaussian_event",
    "gaussian_event_mu",
]
