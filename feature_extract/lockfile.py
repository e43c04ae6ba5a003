"""An exclusive, advisory lock on a path, held through a sidecar file ``<path>.lock`` (``flock``).

Rule: the holder has ``flock(LOCK_EX | LOCK_NB)`` on ``<path>.lock``. The kernel drops the lock
when the holder closes the file or dies (SIGKILL included), so a lock left by a dead process never
blocks: its file is simply locked again. The holder writes JSON ``{"pid", "host", "started",
"command"}`` into the file so that a refused process can say who holds the lock. On release the
holder unlinks the file while it still holds it; an acquirer checks, once locked, that the path
still names the file it locked (same device and inode) and starts again otherwise, so two
processes never hold the lock through two different files.

Within one process the lock is re-entrant (a count per path): nested holders, such as an
extraction and the split writers it creates, share it. It is not a lock between threads, and a
forked child does not inherit it. ``flock`` works on local file systems and on NFS (where Linux
emulates it with ``fcntl`` byte-range locks).

Only the standard library and ``feature_extract.interrupts`` (standard library only) are imported.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import shlex
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from feature_extract import interrupts

SUFFIX = ".lock"
_HELD: dict[str, list[int]] = {}  # lock path -> [fd, count, pid]
_GUARD = threading.Lock()


class LockHeld(Exception):
    """The lock is held by another process; ``holder`` is what it recorded (may be empty)."""

    def __init__(self, lock_path: str, holder: dict[str, Any]):
        super().__init__(f"{lock_path} is held by {describe(holder)}")
        self.lock_path, self.holder = lock_path, holder


def lock_path(path: str | os.PathLike) -> str:
    """The sidecar lock file of ``path``: ``<absolute path>.lock``."""
    return os.path.abspath(os.fspath(path)) + SUFFIX


def describe(holder: dict[str, Any]) -> str:
    """``pid 123 on host h since 2024-01-01T00:00:00Z (python -m ...)``, or an unknown holder."""
    if not holder.get("pid"):
        return "a process that has not recorded itself yet"
    text = f"pid {holder['pid']} on host {holder.get('host', '?')}"
    if holder.get("started"):
        text += f" since {holder['started']}"
    if holder.get("command"):
        text += f" ({holder['command']})"
    return text


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        data = json.loads(os.pread(fd, 1 << 16, 0).decode() or "{}")
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _record(fd: int, command: str | None) -> None:
    """Write who holds the lock; best effort (a full disk must not stop the run)."""
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": started,
        "command": command if command is not None else shlex.join([sys.executable, *sys.argv]),
    }
    with suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)


def acquire(path: str | os.PathLike, command: str | None = None) -> None:
    """Take the lock of ``path`` (re-entrant in this process); raise ``LockHeld`` if taken."""
    lock = lock_path(path)
    with interrupts.deferred_sigint(), _GUARD:  # a Ctrl-C never leaves a lock held but unrecorded
        held = _HELD.get(lock)
        if held is not None and held[2] == os.getpid():
            held[1] += 1
            return
        while True:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise LockHeld(lock, holder) from None
            except BaseException:
                os.close(fd)
                raise
            try:
                same = os.stat(lock)
                mine = os.fstat(fd)
                if (same.st_dev, same.st_ino) == (mine.st_dev, mine.st_ino):
                    break
            except FileNotFoundError:
                pass
            os.close(fd)  # a releasing holder unlinked the file we locked: start again
        _record(fd, command)
        _HELD[lock] = [fd, 1, os.getpid()]


def release(path: str | os.PathLike) -> None:
    """Drop one hold of ``path``'s lock; the last one unlinks the lock file and unlocks it."""
    lock = lock_path(path)
    with interrupts.deferred_sigint(), _GUARD:
        held = _HELD.get(lock)
        if held is None or held[2] != os.getpid():
            return
        held[1] -= 1
        if held[1] > 0:
            return
        del _HELD[lock]
        with suppress(OSError):
            os.unlink(lock)
        os.close(held[0])  # closing the last descriptor releases the flock


@contextmanager
def hold(path: str | os.PathLike, command: str | None = None) -> Iterator[None]:
    """``with hold(path):`` the lock of ``path`` for the block (see ``acquire``)."""
    acquire(path, command)
    try:
        yield
    finally:
        release(path)


def holder(path: str | os.PathLike) -> dict[str, Any] | None:
    """What the holder of ``path``'s lock recorded, or None when no live process holds it.

    Best effort, for messages and tests: it reads the lock file without locking it (so that it
    never makes a real acquirer fail), and treats a record of a dead process on this host as stale.
    """
    lock = lock_path(path)
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        info = _read_holder(fd)
    finally:
        os.close(fd)
    if info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int):
        try:
            os.kill(info["pid"], 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
    return info
