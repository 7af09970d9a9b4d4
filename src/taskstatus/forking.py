"""Per-process state across ``fork()``: pools and threads must not leak into a child.

A child inherits memory, not threads: a lock or a database connection that another thread of the
parent was using at the moment of the fork is left mid-use in the child, forever. Two tools:
:func:`reset_after_fork` rebuilds such state in the child, and :func:`quiesce_across_fork`
makes a fork wait until a background thread is between two pieces of work.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from typing import TypeVar

__all__ = ["FORK_WAIT_SECONDS", "quiesce_across_fork", "reset_after_fork"]

T = TypeVar("T")

#: Longest a fork waits for a background thread to finish what it is doing with the store.
FORK_WAIT_SECONDS = 10.0


def reset_after_fork(owner: T, reset: Callable[[T], None]) -> None:
    """Call ``reset(owner)`` in every child forked later, for as long as ``owner`` lives."""
    ref = weakref.ref(owner)

    def after_fork_in_child() -> None:
        alive = ref()
        if alive is not None:
            reset(alive)

    os.register_at_fork(after_in_child=after_fork_in_child)


def quiesce_across_fork(owner: T, busy: Callable[[T], threading.Lock]) -> None:
    """Hold ``busy(owner)`` across every later fork, for as long as ``owner`` lives.

    A background thread that holds the lock while it works is then never caught mid-statement
    by a fork (which would leave the child a connection, or SQLite's shared-memory index, in a
    state no thread of the child will ever finish). The wait is bounded: a fork that cannot get
    the lock in :data:`FORK_WAIT_SECONDS` goes ahead rather than hang the parent. The child
    must replace the lock (see :func:`reset_after_fork`).
    """
    ref = weakref.ref(owner)
    held: list[threading.Lock] = []

    def before() -> None:
        alive = ref()
        if alive is not None:
            lock = busy(alive)
            if lock.acquire(timeout=FORK_WAIT_SECONDS):
                held.append(lock)

    def after_in_parent() -> None:
        while held:
            held.pop().release()

    def after_in_child() -> None:
        held.clear()

    os.register_at_fork(
        before=before, after_in_parent=after_in_parent, after_in_child=after_in_child
    )
