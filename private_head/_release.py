"""The one place where noise meets a private statistic: a plan's releaser.

A method's run hands every statistic to a ``Releaser`` (a Protocol: the plan's releaser, or a view
of it such as a selection candidate's, whose names carry a prefix). ``PlanReleaser`` adds the
planned noise:

    released = statistic + N(0, noise_std^2 I),   noise drawn from fold_in(fold_in(noise, r), t)

for release r of the plan and draw t < count, where ``noise, sampling = split(key)``: the
releaser's key is split once into a noise root and a sampling root, and the randomness of draw
t's sample (e.g. Poisson sampling) is ``fold_in(fold_in(sampling, r), t)``. The two domains
share no derivation block, whatever the size of a noise draw. It refuses a name that is not
planned and more draws than planned, so a run can never release more than the ledger holds, and
``unreleased()`` lists the charged draws a run did not make.

Its ``observer`` (None in normal use) is a test seam: it sees each planned release, its draw, the
statistic before its noise and the value released, and may replace the released value
(record-and-replay of neighbouring datasets, ``private_head.testing``); it changes nothing else.
``observing(observer)`` sets the observer of every releaser made inside a ``with`` block.

Each draw made ticks the plan's progress bar, when one is shown (``_progress``: public counts
only, on stderr).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterator
from typing import Protocol, TypeVar

import jax
import jax.numpy as jnp
import numpy as np

from private_head._kernel import gaussian_noise_like
from private_head._plan import Plan, PlannedRelease
from private_head._progress import progress_bar
from private_head._settings import Settings

T = TypeVar("T")
Choose = Callable[[jax.Array, jax.Array], jax.Array]


class Releaser(Protocol):
    """What a method's run may do with a statistic: release it with its planned noise, run a
    planned selection on scores, or get the randomness of a planned sample."""

    def release(self, name: str, statistic: T) -> T:
        """``statistic`` (a pytree of float32 arrays) plus the noise of the next planned draw."""
        ...

    def choice(self, name: str, scores: jax.Array, choose: Choose) -> jax.Array:
        """``choose(key, scores)`` for the next draw of a planned dominating-GDP selection."""
        ...

    def sampling_key(self, name: str, draw: int) -> jax.Array:
        """The randomness of draw ``draw``'s sample (e.g. Poisson sampling) of release ``name``."""
        ...


class Observer(Protocol):
    """The test seam (module docstring): returns the value to release."""

    def __call__(self, release: PlannedRelease, draw: int, statistic: T, released: T) -> T: ...


_OBSERVER: contextvars.ContextVar[Observer | None] = contextvars.ContextVar(
    "observer", default=None
)


@contextlib.contextmanager
def observing(observer: Observer) -> Iterator[None]:
    """Every ``PlanReleaser`` made in this block without an observer of its own gets
    ``observer`` (the test seam of the module docstring)."""
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


def planned_noise(key: jax.Array, tree: T, std: float | jax.Array, symmetric: bool) -> T:
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
def _noise(key: jax.Array, statistic: T, std: float | jax.Array, *, symmetric: bool) -> T:
    """``planned_noise`` as one compiled call (a float64 statistic gets it added on the host)."""
    return planned_noise(key, statistic, std, symmetric)


@jax.jit
def split_pair(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``jax.random.split(key)`` as two keys, in one compiled call (no eager indexing)."""
    first, second = jax.random.split(key)
    return first, second


@functools.partial(jax.jit, static_argnames=("symmetric",))
def _noisy(key: jax.Array, statistic: T, std: float | jax.Array, *, symmetric: bool) -> T:
    """``statistic + planned_noise(...)`` as one compiled call."""
    noise = planned_noise(key, statistic, std, symmetric)
    return jax.tree_util.tree_map(jnp.add, statistic, noise)


class PlanReleaser:
    """The releaser of one plan (module docstring); ``draws`` counts what was released, by
    name."""

    def __init__(self, plan: Plan[Settings], key: jax.Array, observer: Observer | None = None):
        self.plan = plan
        self.noise_root, self.sampling_root = split_pair(key)
        self.observer = observer if observer is not None else _OBSERVER.get()
        self.draws: dict[str, int] = {}
        self.tick = progress_bar(sum(release.count for release in plan.releases))

    def _next(self, name: str, noisy: bool) -> tuple[PlannedRelease, jax.Array, int]:
        try:
            index, planned = self.plan.find(name)
        except KeyError:
            raise RuntimeError(
                f"release {name!r} is not in the plan; refusing to release it"
            ) from None
        if (planned.noise_std is not None) != noisy:
            raise RuntimeError(
                f"release {name!r} is planned {'with' if planned.noise_std is not None else 'as'}"
                f" {'Gaussian noise' if planned.noise_std is not None else 'a selection'}; "
                f"refusing to use it as {'a noisy release' if noisy else 'a selection'}"
            )
        draw = self.draws.get(name, 0)
        if draw >= planned.count:
            raise RuntimeError(
                f"release {name!r} was planned {planned.count} time(s); refusing draw {draw + 1}"
            )
        self.draws[name] = draw + 1
        if self.tick is not None:
            self.tick()
        return planned, draw_key(self.noise_root, index, draw), draw

    def release(self, name: str, statistic: T) -> T:
        planned, key, draw = self._next(name, noisy=True)
        std = planned.noise_std
        if isinstance(statistic, (np.ndarray, np.floating)) and statistic.dtype == np.float64:
            noise = _noise(key, statistic, std, symmetric=planned.symmetric)
            noisy = statistic + np.asarray(noise, np.float64)  # exact beyond 2^24 (a count)
        else:
            noisy = _noisy(key, statistic, std, symmetric=planned.symmetric)
        if self.observer is not None:
            noisy = self.observer(planned, draw, statistic, noisy)
        return noisy

    def choice(self, name: str, scores: jax.Array, choose: Choose) -> jax.Array:
        planned, key, draw = self._next(name, noisy=False)
        chosen = choose(key, scores)
        if self.observer is not None:
            chosen = self.observer(planned, draw, scores, chosen)
        return chosen

    def sampling_key(self, name: str, draw: int) -> jax.Array:
        return draw_key(self.sampling_root, self.plan.find(name)[0], draw)

    def unreleased(self) -> dict[str, int]:
        """Planned draws that were not made (a method must make every draw it charged)."""
        missing = {}
        for release in self.plan.releases:
            left = release.count - self.draws.get(release.name, 0)
            if left:
                missing[release.name] = left
        return missing


__all__ = [
    "Choose",
    "Observer",
    "PlanReleaser",
    "Releaser",
    "draw_key",
    "observing",
    "planned_noise",
    "symmetric_noise",
]
