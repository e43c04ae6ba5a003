"""Release plans, and the one place where noise meets a private statistic.

A method plans its releases from public information (shapes, the dataset-size convention, the
budget, its options) before any private statistic is computed: each ``PlannedRelease`` names the
statistic, its L2 sensitivity, the Gaussian noise std added to it, how many times it is released,
and the dp_accounting ``DpEvent`` that describes it. ``fit`` charges the whole plan to the ledger,
then the method runs and hands every statistic to ``Releaser.release``, which adds the planned
noise:

    released = statistic + N(0, noise_std^2 I),   noise drawn from fold_in(fold_in(noise, r), t)

for release r of the plan and draw t < count, where ``noise, sampling = split(key)``: the
releaser's key is split once into a noise root and a sampling root, and the randomness of draw
t's sample (e.g. Poisson sampling) is ``fold_in(fold_in(sampling, r), t)``. The two domains
share no derivation block, whatever the size of a noise draw. The releaser refuses a name that
is not planned and more draws than planned, so a run can never release more than the ledger
holds. Its ``observer`` (None in normal use) is a test seam: it sees each statistic before its
noise is added and may replace the released value (record-and-replay of neighbouring datasets);
it changes nothing else. ``observing(observer)`` sets the observer of every releaser made inside
a ``with`` block (so a whole ``fit`` or command-line run can be replayed:
``private_head.testing``).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np

from private_head._budget import Ledger
from private_head._kernel import gaussian_noise_like

GAUSSIAN, POISSON, DOMINATING_GDP = "gaussian", "poisson_gaussian", "dominating_gdp"


@dataclass(frozen=True)
class PlannedRelease:
    """One named release of a plan (module docstring).

    ``kind``: ``"gaussian"`` (``count`` releases of a sum with sensitivity ``sensitivity`` plus
    N(0, noise_std^2)), ``"poisson_gaussian"`` (the same on a Poisson sample of rate
    ``sampling_rate``, accounted by PLD) or ``"dominating_gdp"`` (a mechanism that adds no Gaussian
    noise, e.g. report-noisy-max, charged as the ``mu``-GDP that dominates it; ``description``
    says so). ``symmetric``: the statistic is a symmetric matrix whose noise is ``s (U + U^T)/2``
    (see ``symmetric_noise``).
    """

    name: str
    sensitivity: float | None
    noise_std: float | None
    count: int = 1
    kind: str = GAUSSIAN
    sampling_rate: float | None = None
    mu: float | None = None
    description: str | None = None
    symmetric: bool = False

    @property
    def noise_multiplier(self) -> float | None:
        if self.noise_std is None or self.sensitivity is None:
            return None
        return self.noise_std / self.sensitivity

    @property
    def event(self) -> dp_accounting.DpEvent:
        """The dp_accounting event of all ``count`` draws of this release."""
        if self.kind == DOMINATING_GDP:
            return dp_accounting.GaussianDpEvent(1.0 / self.mu)
        base: dp_accounting.DpEvent = dp_accounting.GaussianDpEvent(self.noise_multiplier)
        if self.kind == POISSON:
            base = dp_accounting.PoissonSampledDpEvent(self.sampling_rate, base)
        return base if self.count == 1 else dp_accounting.SelfComposedDpEvent(base, self.count)

    def charge(self, ledger: Ledger) -> None:
        """Record this release in ``ledger`` (which refuses it when it would overspend)."""
        if self.kind == GAUSSIAN:
            ledger.record_gaussian(
                self.name, sensitivity=self.sensitivity, noise_std=self.noise_std, count=self.count
            )
        elif self.kind == DOMINATING_GDP:
            ledger.record_gdp(self.name, self.mu, description=self.description)
        else:
            ledger.record_event(
                self.name,
                self.event,
                description=self.description,
                sensitivity=self.sensitivity,
                noise_std=self.noise_std,
                count=self.count,
            )


@dataclass(frozen=True)
class Plan:
    """A method's releases and the settings it runs with (resolved options, public only)."""

    releases: tuple[PlannedRelease, ...]
    settings: Any = None
    notes: dict[str, Any] = field(default_factory=dict)

    def __add__(self, other: Plan) -> Plan:
        return Plan(self.releases + other.releases, other.settings, {**self.notes, **other.notes})

    def charge(self, ledger: Ledger) -> None:
        for release in self.releases:
            release.charge(ledger)

    def index(self, name: str) -> int:
        for i, release in enumerate(self.releases):
            if release.name == name:
                return i
        raise KeyError(name)


Observer = Callable[[str, int, Any], Any]
_OBSERVER: contextvars.ContextVar[Observer | None] = contextvars.ContextVar(
    "observer", default=None
)


@contextlib.contextmanager
def observing(observer: Observer) -> Iterator[None]:
    """Every ``Releaser`` made in this block without an observer of its own gets ``observer``
    (the test seam of the module docstring)."""
    token = _OBSERVER.set(observer)
    try:
        yield
    finally:
        _OBSERVER.reset(token)


def symmetric_noise(key: jax.Array, dim: int, std: float | jax.Array) -> jax.Array:
    """``s (U + U^T) / 2`` with U iid N(0, 1) [dim, dim]: diagonal std s, off-diagonal s/sqrt(2).

    The Gram ``X^T X`` moves by ``x x^T`` when a row is added, of Frobenius norm ``||x||^2 <= r^2``.
    Releasing the whole matrix plus iid N(0, s^2) noise (sensitivity r^2 in Frobenius norm) and
    keeping its symmetric part, post-processing, gives exactly this noise: the same privacy as
    noising the upper triangle with std s, with sqrt(2) less noise off the diagonal.
    """
    u = jax.random.normal(key, (dim, dim), jnp.float32)
    return std * 0.5 * (u + u.T)


def planned_noise(key: jax.Array, tree: Any, std: float | jax.Array, symmetric: bool) -> Any:
    """N(0, std^2) float32 noise shaped like ``tree``; a symmetric release gets
    ``symmetric_noise`` (``tree`` is then one square matrix)."""
    if symmetric:
        return symmetric_noise(key, jnp.shape(tree)[0], std)
    return gaussian_noise_like(key, tree, std)


@jax.jit
def draw_key(key: jax.Array, index: int | jax.Array, draw: int | jax.Array) -> jax.Array:
    """The key of draw ``draw`` of release ``index``: ``fold_in(fold_in(key, index), draw)``."""
    return jax.random.fold_in(jax.random.fold_in(key, index), draw)


@functools.partial(jax.jit, static_argnames=("symmetric",))
def _noisy(key: jax.Array, statistic: Any, std: float | jax.Array, *, symmetric: bool) -> Any:
    """``statistic + planned_noise(...)`` as one compiled call."""
    noise = planned_noise(key, statistic, std, symmetric)
    return jax.tree_util.tree_map(jnp.add, statistic, noise)


class Releaser:
    """Adds each planned release's noise to its statistic (module docstring).

    ``release(name, statistic, draw=t)`` returns the statistic (a pytree of float32 arrays) plus
    the planned noise; ``choice(name, scores)`` runs a planned dominating-GDP selection. ``draws``
    counts what was released, by name.
    """

    def __init__(self, plan: Plan, key: jax.Array, observer: Observer | None = None):
        self.plan = plan
        self.noise_root, self.sampling_root = jax.random.split(key)
        self.observer = observer if observer is not None else _OBSERVER.get()
        self.draws: dict[str, int] = {}

    def _next(self, name: str, kind: str) -> tuple[PlannedRelease, jax.Array, int]:
        try:
            index = self.plan.index(name)
        except KeyError:
            raise RuntimeError(
                f"release {name!r} is not in the plan; refusing to release it"
            ) from None
        planned = self.plan.releases[index]
        if (planned.kind == DOMINATING_GDP) != (kind == DOMINATING_GDP):
            raise RuntimeError(f"release {name!r} is planned as {planned.kind}, used as {kind}")
        draw = self.draws.get(name, 0)
        if draw >= planned.count:
            raise RuntimeError(
                f"release {name!r} was planned {planned.count} time(s); refusing draw {draw + 1}"
            )
        self.draws[name] = draw + 1
        return planned, draw_key(self.noise_root, index, draw), draw

    def release(self, name: str, statistic: Any) -> Any:
        """``statistic + noise`` of the next planned draw of release ``name``."""
        planned, key, draw = self._next(name, GAUSSIAN)
        if isinstance(statistic, (np.ndarray, np.floating)) and statistic.dtype == np.float64:
            noise = planned_noise(key, statistic, planned.noise_std, planned.symmetric)
            noisy = statistic + np.asarray(noise, np.float64)  # exact beyond 2^24 (a count)
        else:
            noisy = _noisy(key, statistic, planned.noise_std, symmetric=planned.symmetric)
        if self.observer is not None:
            noisy = self.observer(name, draw, {"statistic": statistic, "released": noisy})
        return noisy

    def choice(self, name: str, scores: jax.Array, choose: Callable[[jax.Array, Any], Any]) -> Any:
        """``choose(key, scores)`` for a planned dominating-GDP selection (e.g. noisy max)."""
        _, key, draw = self._next(name, DOMINATING_GDP)
        chosen = choose(key, scores)
        if self.observer is not None:
            chosen = self.observer(name, draw, {"statistic": scores, "released": chosen})
        return chosen

    def sampling_key(self, name: str, draw: int) -> jax.Array:
        """The randomness of draw ``draw``'s sample (e.g. Poisson sampling) of release ``name``,
        from the sampling root: independent of every noise draw, fixed by the key."""
        return draw_key(self.sampling_root, self.plan.index(name), draw)

    def unreleased(self) -> dict[str, int]:
        """Planned draws that were not made (a method must make every draw it charged)."""
        missing = {}
        for release in self.plan.releases:
            left = release.count - self.draws.get(release.name, 0)
            if left:
                missing[release.name] = left
        return missing


def describe(release: PlannedRelease) -> str:
    """One line for the CLI summary."""
    if release.kind == DOMINATING_GDP:
        return f"{release.name}: {release.description} (mu {release.mu:.4g})"
    text = (
        f"{release.name}: sensitivity {release.sensitivity:.4g}, noise std "
        f"{release.noise_std:.4g}, noise multiplier {release.noise_multiplier:.4g}, count "
        f"{release.count}"
    )
    if release.kind == POISSON:
        text += f", Poisson sampling rate {release.sampling_rate:.4g} (PLD)"
    return text


def gdp_mu(release: PlannedRelease) -> float | None:
    """The release's GDP mu (None for a Poisson-sampled release)."""
    if release.kind == DOMINATING_GDP:
        return release.mu
    if release.kind == POISSON:
        return None
    if release.noise_std == 0:
        return math.inf
    return math.sqrt(release.count) * release.sensitivity / release.noise_std
