"""Pacing of a long bulk delete (purge): short write transactions, and room for the workers.

A purge of a million statuses must not stall the workers writing to the same database. Each
of its transactions is therefore sized by time, not only by count: :class:`BatchPace` sizes
the next batch from the rate of the last ones so that a transaction lasts about ``budget``.
SQLite also has a single writer at a time, and a writer that finds the database locked
sleeps and polls again (1, 2, 5, 10, 15, 20, then 25 ms apart), so the database must also
stay free for ``gap`` after each commit: longer than that polling interval, else a waiting
worker may wake up inside the next transaction, again and again.
"""

from __future__ import annotations

import time

__all__ = ["BatchPace"]


class BatchPace:
    """Batch sizes of about ``budget`` seconds each, at most ``limit``; a pause of ``gap``
    seconds between one commit and the next write (time spent reading counts)."""

    def __init__(self, limit: int, budget: float, gap: float = 0.0, first: int = 200) -> None:
        self.limit = limit
        self.budget = budget
        self.gap = gap
        self.size = max(1, min(limit, first))
        self._committed = float("-inf")

    def wait(self) -> None:
        """Before a write: let the database stay free ``gap`` after the last commit."""
        rest = self._committed + self.gap - time.monotonic()
        if rest > 0:
            time.sleep(rest)

    def done(self, count: int, seconds: float) -> None:
        """A write of ``count`` items took ``seconds``, commit included: size the next."""
        self._committed = time.monotonic()
        if count < self.size:
            return  # a short batch says nothing about the rate
        fits = int(count * self.budget / seconds) if seconds > 0 else self.limit
        # Grow at most twofold at a time: one fast batch may have been a lucky one.
        self.size = max(1, min(self.limit, 2 * self.size, fits))
