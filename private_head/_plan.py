"""Release plans: every release a method will make, with the dp-accounting event that charges it,
fixed before any private statistic is computed (docs/architecture.md, "Methods").

A ``PlannedRelease`` names a statistic, its L2 sensitivity C, the std s of the Gaussian noise the
releaser adds to each of its ``count`` draws, and its event:

    gaussian(name, C, s, count)              SelfComposed(Gaussian(s / C), count), exactly
                                             (sqrt(count) C / s)-GDP
    poisson_sampled(name, C, sigma, q, T)    SelfComposed(PoissonSampled(q, Gaussian(sigma)), T),
                                             s = sigma C (PLD)
    dominating_gdp(name, mu, description)    Gaussian(1 / mu): a mechanism that adds no Gaussian
                                             noise of its own (a selection), charged as the mu-GDP
                                             that dominates it

A release that adds noise is checked to charge exactly that noise (its event's noise multiplier
times C is s, its self-composition count is ``count``). ``symmetric``: the statistic is a
symmetric matrix whose noise is ``s (U + U^T) / 2`` (``_release.symmetric_noise``).

A ``Plan[S]`` holds the releases and the settings ``S`` (a frozen ``Settings``) its run needs,
resolved from the options and public information only. ``plan.dp_event`` is the composition of
its releases; ``plan.charge(ledger)`` records each with ``ledger.compose``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Generic, TypeVar

import dp_accounting

from accounting.events import check_event, gaussian_event
from accounting.poisson import poisson_event
from private_head._budget import Ledger
from private_head._settings import Settings
from private_head._validation import check_non_negative, check_positive

S = TypeVar("S", bound=Settings)


@dataclass(frozen=True)
class PlannedRelease:
    """One named release of a plan (module docstring); build it with ``gaussian``,
    ``poisson_sampled`` or ``dominating_gdp``."""

    name: str
    event: dp_accounting.DpEvent
    count: int = 1
    sensitivity: float | None = None
    noise_std: float | None = None
    symmetric: bool = False
    description: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a release needs a non-empty name, got {self.name!r}")
        check_event(self.event)
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise ValueError(f"release {self.name!r}: count must be an integer >= 1")
        if self.noise_std is None:
            if self.sensitivity is not None or self.symmetric:
                raise ValueError(f"release {self.name!r}: a sensitivity needs its noise std")
            return
        sigma, count = _gaussian_noise(self.event)
        if sigma is None or count != self.count or self.sensitivity is None:
            raise ValueError(
                f"release {self.name!r} adds noise: its event must be [SelfComposed(., count)] "
                f"[PoissonSampled(q, .)] Gaussian(noise_std / sensitivity), got {self.event!r}"
            )
        if not math.isclose(sigma * self.sensitivity, self.noise_std, rel_tol=1e-12):
            raise ValueError(
                f"release {self.name!r} adds noise std {self.noise_std} but its event charges "
                f"{sigma} x sensitivity {self.sensitivity}"
            )

    @classmethod
    def gaussian(
        cls,
        name: str,
        sensitivity: float,
        noise_std: float,
        *,
        count: int = 1,
        symmetric: bool = False,
    ) -> PlannedRelease:
        """``count`` draws of a statistic of L2 sensitivity C plus N(0, noise_std^2 I)."""
        check_positive("sensitivity", sensitivity)
        check_non_negative("noise_std", noise_std)
        event = gaussian_event(noise_std / sensitivity, count)
        return cls(name, event, count, float(sensitivity), float(noise_std), symmetric)

    @classmethod
    def poisson_sampled(
        cls,
        name: str,
        sensitivity: float,
        noise_multiplier: float,
        sampling_rate: float,
        *,
        count: int,
        description: str,
    ) -> PlannedRelease:
        """``count`` draws of a sum of sensitivity C over a Poisson sample of rate q, each plus
        N(0, (sigma C)^2 I) (accounted by PLD)."""
        check_positive("sensitivity", sensitivity)
        event = poisson_event(noise_multiplier, sampling_rate, count)
        noise_std = noise_multiplier * sensitivity
        return cls(name, event, count, float(sensitivity), noise_std, description=description)

    @classmethod
    def dominating_gdp(cls, name: str, mu: float, description: str) -> PlannedRelease:
        """A mechanism known to be ``mu``-GDP that adds no Gaussian noise (``Releaser.choice``),
        charged as ``Gaussian(1 / mu)``; ``description`` says what it is and why."""
        check_positive("mu", mu)
        if not description:
            raise ValueError(f"release {name!r} needs a description of its GDP bound")
        return cls(name, dp_accounting.GaussianDpEvent(1.0 / mu), description=description)

    def renamed(self, name: str) -> PlannedRelease:
        return dataclasses.replace(self, name=name)


def _gaussian_noise(event: dp_accounting.DpEvent) -> tuple[float | None, int]:
    """``(sigma, count)`` of ``[SelfComposed(., count)] [PoissonSampled(q, .)] Gaussian(sigma)``;
    ``(None, 0)`` for any other event."""
    count = 1
    if isinstance(event, dp_accounting.SelfComposedDpEvent):
        count, event = event.count, event.event
    if isinstance(event, dp_accounting.PoissonSampledDpEvent):
        event = event.event
    if isinstance(event, dp_accounting.GaussianDpEvent):
        return float(event.noise_multiplier), count
    return None, 0


@dataclass(frozen=True)
class Plan(Generic[S]):
    """A method's releases and the settings its run needs (module docstring)."""

    releases: tuple[PlannedRelease, ...]
    settings: S

    def __post_init__(self) -> None:
        names = [r.name for r in self.releases]
        if len(set(names)) != len(names):
            raise ValueError(f"a plan's release names must be unique, got {names}")

    @property
    def dp_event(self) -> dp_accounting.DpEvent:
        """The composition of every release's event (``NoOp`` when there is none)."""
        if not self.releases:
            return dp_accounting.NoOpDpEvent()
        return dp_accounting.ComposedDpEvent([r.event for r in self.releases])

    def find(self, name: str) -> tuple[int, PlannedRelease]:
        """``(index, release)`` of the release ``name``; KeyError when it is not planned."""
        for i, release in enumerate(self.releases):
            if release.name == name:
                return i, release
        raise KeyError(name)

    def charge(self, ledger: Ledger) -> None:
        """Record every release in ``ledger`` (which refuses one that would overspend)."""
        for r in self.releases:
            ledger.compose(
                r.name,
                r.event,
                sensitivity=r.sensitivity,
                noise_std=r.noise_std,
                count=r.count,
                description=r.description,
            )


__all__ = ["Plan", "PlannedRelease", "S"]
