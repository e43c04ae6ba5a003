"""Progress of a fit on stderr: one bar per plan of several draws, one tick per noisy release.

    with showing_progress(True, "dp_gd"):
        ... fit ...          # stderr: "fit dp_gd: 37/110 releases |████      |"

A plan's draws (``PlannedRelease.count`` summed) are fixed before its run from public
information, so the bar shows nothing but public counts: no times, no rates (tqdm's defaults
would show the wall time, which grows with the private row count; docs/architecture.md, "The
whole artefact"). It goes to stderr, never into what a fit returns or writes. A plan of one or two
draws (the single step, the noisy count, the standardisation's two sums) shows no bar; with several
JAX processes only process 0 shows one. ``PlanReleaser`` asks ``progress_bar(total)`` for its tick
when it is made.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator

import jax
from tqdm import tqdm

BAR_FORMAT = "{desc}: {n_fmt}/{total_fmt} releases |{bar}|"
MOMENTARY = 2  # plans of at most this many draws pass in a moment: no bar
Tick = Callable[[], None]

_BARS: contextvars.ContextVar[tuple[str, list[tqdm]] | None] = contextvars.ContextVar(
    "progress", default=None
)


@contextlib.contextmanager
def showing_progress(enabled: bool, name: str) -> Iterator[None]:
    """Show a bar (``desc`` "fit NAME") for every plan of several draws made in this block;
    the bars are closed when it ends."""
    if not enabled or jax.process_index() != 0:
        yield
        return
    bars: list[tqdm] = []
    token = _BARS.set((name, bars))
    try:
        yield
    finally:
        _BARS.reset(token)
        for bar in bars:
            bar.close()


def progress_bar(total: int) -> Tick | None:
    """The tick of a new bar of ``total`` draws, or None (no bar shown: module docstring)."""
    shown = _BARS.get()
    if shown is None or total <= MOMENTARY:
        return None
    name, bars = shown
    bar = tqdm(total=total, desc=f"fit {name}", bar_format=BAR_FORMAT, dynamic_ncols=True)
    bars.append(bar)
    return lambda: bar.update(1)


__all__ = ["progress_bar", "showing_progress"]
