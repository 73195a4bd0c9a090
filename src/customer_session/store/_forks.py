"""The descriptors that hold a delivery lock, which a forked child lets go of.

A delivery lock is held through a descriptor that a fork copies: the SQLite lock
file (``flock`` belongs to the open file, shared with the child) and the socket of
the PostgreSQL connection holding the advisory lock (the server ends the session,
and with it the lock, only once every copy of the socket is closed). A child that
outlives the delivery (a worker pool a handler started, a fork by another thread)
would hold the lock until it exits, and every later delivery would wait for it,
even once the delivering process was killed. In a forked child, each such
descriptor is pointed at ``/dev/null`` (not closed, so that the number is not
reused under code that still owns it; the parent's copy is untouched).
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Final

_HELD: Final[set[int]] = set()

# Reentrant: a fork from a signal handler, on the thread holding it, must not wait
# for itself.
GUARD: Final = threading.RLock()
"""Held by a fork (between its before and after hooks): take it around the open of a
descriptor and :func:`hold`, or :func:`let_go` and its close, so that no fork copies
the descriptor unnoted."""


def hold(descriptor: int) -> None:
    """Note that ``descriptor`` holds (or is about to hold) a delivery lock."""
    _HELD.add(descriptor)


def let_go(descriptor: int) -> None:
    """Note that ``descriptor`` holds no delivery lock any more."""
    _HELD.discard(descriptor)


def _in_child() -> None:
    """Point the descriptors the parent holds delivery locks with at ``/dev/null``."""
    try:
        if _HELD:
            null = os.open(os.devnull, os.O_RDONLY)
            try:
                for descriptor in _HELD:
                    os.dup2(null, descriptor, inheritable=False)
            finally:
                os.close(null)
            _HELD.clear()
    finally:
        GUARD.release()


if sys.platform != "win32":  # no fork on Windows
    os.register_at_fork(
        before=GUARD.acquire, after_in_parent=GUARD.release, after_in_child=_in_child
    )
