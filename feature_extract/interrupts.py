"""Ctrl-C during an extraction: stop within a moment, never in the middle of a store write.

See docs/architecture.md, "The feature store". Three rules keep a stop prompt and the store exact:

- **The main thread never waits where a signal cannot reach it.** A device computation or an XLA
  compilation blocks in C++ until it is done (minutes for a big batch on a CPU), so ``wait_ready``
  and ``run_in_background`` leave that blocking to a daemon thread and wait on a future, which
  Ctrl-C interrupts.
- **Thread pools drop queued work when the consumer stops** (``thread_pool``): a stopped run
  cancels what has not started and does not wait for what is running.
- **A store write is never cut short** (``deferred_sigint``): a Ctrl-C that arrives while rows
  are written, flushed and committed takes effect right after, so the file is always closed with
  its row count committed only after its rows are flushed, and a second Ctrl-C changes nothing.

Work left running (a device batch, a decode) is dropped, not awaited: the command line exits at
once, and a rerun recomputes those rows. Only the standard library is imported (the store's
reader imports this module).
"""

from __future__ import annotations

import _thread
import gc
import signal
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from types import FrameType
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Waitable(Protocol):
    """What ``wait_ready`` waits for: a ``jax.Array`` (anything with ``block_until_ready``)."""

    def block_until_ready(self) -> Any: ...


def run_in_background(fn: Callable[[], T]) -> T:
    """``fn()``, run on a daemon thread while this thread waits in a way Ctrl-C interrupts.

    The KeyboardInterrupt leaves ``fn`` running on its thread, which never holds up the exit.
    """
    future: Future[T] = Future()

    def run() -> None:
        try:
            future.set_result(fn())
        except BaseException as err:  # handed to the waiting thread, which raises it
            future.set_exception(err)

    threading.Thread(target=run, name="background-wait", daemon=True).start()
    return future.result()  # a lock wait: a signal interrupts it


def wait_ready(array: Waitable) -> None:
    """Wait until a dispatched device computation is done, in a way Ctrl-C interrupts.

    An error of the computation is left for the caller's next read of ``array`` to raise.
    """

    def block() -> None:
        with suppress(Exception):  # raised again where the caller reads the array
            array.block_until_ready()

    run_in_background(block)


@contextmanager
def thread_pool(workers: int, name: str) -> Iterator[ThreadPoolExecutor]:
    """A ``ThreadPoolExecutor`` that, when the block ends early (an error, Ctrl-C, a consumer
    that stops), cancels the work not started and returns without waiting for the work running
    (it finishes on its own; ``wait_ready``'s rule for device work)."""
    pool = ThreadPoolExecutor(workers, thread_name_prefix=name)
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


@contextmanager
def deferred_sigint() -> Iterator[None]:
    """Hold back SIGINT for the block: one that arrives inside is delivered when the block ends
    (to the handler that was installed before it: normally a KeyboardInterrupt).

    Only the main thread receives signals in Python; elsewhere the block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    previous = signal.SIG_DFL if previous is None else previous  # None: not set from Python
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received and callable(previous):
            previous(signal.SIGINT, None)
        elif received and previous == signal.SIG_DFL:
            signal.raise_signal(signal.SIGINT)


def interrupt_once(signum: int, frame: FrameType | None) -> None:
    """The SIGINT handler of the command lines: the first Ctrl-C stops the run; later ones are
    ignored, so that they cannot cut short the cleanup (writes being finished, a lock released,
    a budget settled, a file renamed into place).

    A KeyboardInterrupt raised inside a finaliser (a ``__del__``, a garbage-collector callback
    such as JAX's) is printed and dropped by Python, and the run would go on: there the interrupt
    is delivered again a moment later (``_thread.interrupt_main``), outside the finaliser."""
    if in_finaliser(frame):
        threading.Timer(0.02, _thread.interrupt_main).start()
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def in_finaliser(frame: FrameType | None) -> bool:
    """True when ``frame`` runs inside a ``__del__`` or a ``gc.callbacks`` function, where an
    exception cannot propagate."""
    callbacks = {getattr(callback, "__code__", None) for callback in gc.callbacks}
    while frame is not None:
        if frame.f_code.co_name == "__del__" or frame.f_code in callbacks:
            return True
        frame = frame.f_back
    return False
