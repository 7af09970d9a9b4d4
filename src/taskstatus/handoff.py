"""A task run handed to a child process forked for it (RQ's work horse).

A worker that forks a child per task would otherwise pay, for every task, a database
connection opened by the child and two writes on it. Instead:

* The worker hands the run off just before forking (:meth:`Lifecycle.hand_off
  <taskstatus.lifecycle.Lifecycle.hand_off>`) and writes nothing. The child takes it over
  (:meth:`~taskstatus.lifecycle.Lifecycle.take_over`): the task's start waits in the child and is
  written only before the child's first other write (progress, a retry, a failure...).
* If the child still runs after ``write_interval``, the worker writes the start, so a long task
  shows In Progress. Both writes of the start are conditional on the status being unchanged
  since the hand-off: whichever comes first counts, and a late one never undoes what the other
  process wrote meanwhile.
* A success is handed back (:meth:`~taskstatus.lifecycle.Lifecycle.hand_back`) through memory
  shared across the fork, with the time the task ended, and the worker writes it in its next
  batch — as start and success in one write if nobody wrote the start. A short task costs its
  child no connection at all.

* Should the worker die while the child runs (killed alone: the child has a process group of
  its own), nobody would vouch for the task nor write its success: the child notices that its
  parent is gone (see :meth:`HandOff.orphaned`), stamps the task's heartbeat itself from then
  on, and writes its own outcome.

Whoever writes them, the start is stamped with the time of the hand-off (just before the fork)
and the success with the time the child reported it, not the time of the write.
"""

from __future__ import annotations

import mmap
import os
import struct
from datetime import datetime, timezone
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

    #: The shared memory: the outcome, then when the task ended (POSIX seconds).
    _LAYOUT = struct.Struct("<Bd")

    def __init__(self, event: TaskEvent, since: datetime, *, deferred: bool) -> None:
        self.event = event
        #: When the run was handed off: the task's start.
        self.since = since
        self.deferred = deferred
        #: The worker: the child's parent, as long as it lives.
        self.parent = os.getpid()
        #: The worker's pending write of the start (a WriteBehind.call_later handle).
        self.start_call: object | None = None
        self._shared = mmap.mmap(-1, self._LAYOUT.size)  # anonymous, so shared with children
        self._LAYOUT.pack_into(self._shared, 0, self.NOTHING, 0.0)

    @property
    def task_id(self) -> str:
        return self.event.task_id

    def orphaned(self) -> bool:
        """In the child: whether the worker that handed the run off has died."""
        return os.getppid() != self.parent

    def report(self, outcome: int, ended: datetime) -> None:
        """In the child: the outcome, and when the task ended."""
        self._LAYOUT.pack_into(self._shared, 0, outcome, ended.timestamp())

    def outcome(self) -> int:
        """In the worker, once the child has ended."""
        return int(self._LAYOUT.unpack_from(self._shared)[0])

    def ended(self) -> datetime:
        """In the worker: when the task ended, as the child reported it."""
        return datetime.fromtimestamp(self._LAYOUT.unpack_from(self._shared)[1], timezone.utc)
