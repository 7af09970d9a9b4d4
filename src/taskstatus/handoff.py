"""A task run handed to a child process forked for it (RQ's work horse).

A worker that forks a child per task would otherwise pay, for every task, a database
connection opened by the child and two writes on it. Instead:

* The worker hands the run off just before forking (:meth:`Tracker.hand_off
  <taskstatus.tracker.Tracker.hand_off>`) and writes nothing. The child takes it over
  (:meth:`~taskstatus.tracker.Tracker.take_over`): the task's start waits in the child and is
  written only before the child's first other write (progress, a retry, a failure...).
* If the child still runs after ``write_interval``, the worker writes the start, so a long task
  shows In Progress. Both writes of the start are conditional on the status being unchanged
  since the hand-off: whichever comes first counts, and a late one never undoes what the other
  process wrote meanwhile.
* A success is handed back (:meth:`~taskstatus.tracker.Tracker.hand_back`) through memory
  shared across the fork, and the worker writes it in its next batch — as start and success in
  one write if nobody wrote the start. A short task costs its child no connection at all.
"""

from __future__ import annotations

import mmap
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .events import TaskEvent

__all__ = ["HandOff"]


class HandOff:
    """One run handed to a child: made by the worker before the fork, inherited by the child.

    ``deferred`` is False when the worker writes everything at once (``write_interval`` 0):
    the child then records the run itself, as any worker would.
    """

    #: What the child reports: it recorded the outcome itself (or it died before the end).
    NOTHING = 0
    #: The task succeeded; its start was written.
    SUCCEEDED = 1
    #: The task succeeded; nobody wrote its start.
    SUCCEEDED_UNSTARTED = 2

    def __init__(self, event: TaskEvent, since: datetime, *, deferred: bool) -> None:
        self.event = event
        self.since = since
        self.deferred = deferred
        #: The worker's pending write of the start (a WriteBehind.call_later handle).
        self.start_call: object | None = None
        self._shared = mmap.mmap(-1, 1)  # anonymous, so shared with children
        self._shared[0] = self.NOTHING

    @property
    def task_id(self) -> str:
        return self.event.task_id

    def report(self, outcome: int) -> None:
        """In the child."""
        self._shared[0] = outcome

    def outcome(self) -> int:
        """In the worker, once the child has ended."""
        return self._shared[0]
