"""Resetting per-process state in a forked child (pools, threads), without keeping objects alive."""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from typing import TypeVar

__all__ = ["reset_after_fork"]

T = TypeVar("T")


def reset_after_fork(owner: T, reset: Callable[[T], None]) -> None:
    """Call ``reset(owner)`` in every child forked later, for as long as ``owner`` lives."""
    ref = weakref.ref(owner)

    def after_fork_in_child() -> None:
        alive = ref()
        if alive is not None:
            reset(alive)

    os.register_at_fork(after_in_child=after_fork_in_child)
