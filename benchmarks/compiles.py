"""Count the XLA compilations of a piece of code, and their seconds (``jax.monitoring``).

    with counting() as log:
        private_head.fit(...)
    log.compilations, log.compile_s, log.trace_s

``compile_s`` is XLA's backend compile time, ``trace_s`` the tracing and lowering before it (both
from JAX's own duration events); a first ``fit`` of a process pays both, a repeated one neither.
The numba host kernel is compiled once per installation and then loaded from its on-disk cache:
its load time is part of the first call's wall time, not of these counts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

COMPILE = "/jax/core/compile/backend_compile_duration"
TRACE = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
)


@dataclass
class CompileLog:
    compilations: int = 0
    compile_s: float = 0.0
    trace_s: float = 0.0


_active: list[CompileLog] = []


def _listener(event: str, duration: float, **_: object) -> None:
    for log in _active:
        if event == COMPILE:
            log.compilations += 1
            log.compile_s += duration
        elif event in TRACE:
            log.trace_s += duration


@contextlib.contextmanager
def counting() -> Iterator[CompileLog]:
    """A ``CompileLog`` filled while the block runs."""
    import jax.monitoring

    if not getattr(_listener, "registered", False):
        jax.monitoring.register_event_duration_secs_listener(_listener)
        _listener.registered = True
    log = CompileLog()
    _active.append(log)
    try:
        yield log
    finally:
        _active.remove(log)
