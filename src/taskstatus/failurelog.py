"""Warnings about writes that keep failing, at a rate a log can bear.

During a store outage every worker thread, heartbeat and progress write fails again and again
(thousands of tracebacks in seconds). :class:`FailureLog` logs the first failure of a run of
failures with its traceback, then at most one line every ``every`` seconds counting those
since, and one line when a write succeeds again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["FailureLog"]

#: Seconds between two summary lines of one run of failures.
SUMMARY_EVERY = 10.0


class FailureLog:
    """Rate-limited warnings of one kind of failing write (thread-safe); ``what`` names it
    in the line saying it works again ("writing progress")."""

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        *,
        every: float = SUMMARY_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._what = what
        self._every = every
        self._clock = clock
        self._lock = threading.Lock()
        #: Failures since the last line logged; None: writes succeed.
        self._unreported: int | None = None
        self._total = 0
        self._last_line = 0.0

    def failed(self, msg: str, *args: Any) -> None:
        """A write failed (call from an ``except`` block): log it if it is the first of a
        run of failures, or if the last line is ``every`` seconds old."""
        now = self._clock()
        with self._lock:
            first = self._unreported is None
            self._total += 1
            if not first and now - self._last_line < self._every:
                self._unreported = (self._unreported or 0) + 1
                return
            count, self._unreported, self._last_line = (self._unreported or 0) + 1, 0, now
        if first:
            self._logger.warning(msg, *args, exc_info=True)
        else:
            self._logger.warning(msg + " (%d failures since the last report)", *args, count)

    def succeeded(self) -> None:
        """A write succeeded: after failures, say so once."""
        if self._unreported is None:
            return
        with self._lock:
            if self._unreported is None:
                return
            total, self._unreported, self._total = self._total, None, 0
        self._logger.warning("taskstatus %s succeeds again after %d failures", self._what, total)
