"""Worker heartbeats: how a task whose worker died is found and ended.

A worker process (from :meth:`~taskstatus.lifecycle.Lifecycle.worker_started`, or from its first
tracked task) keeps one daemon thread per tracker. Every ``heartbeat_interval`` it writes what
this process still holds (queued starts and outcomes), stamps ``heartbeat_at`` on the tasks it
runs, then looks for tasks whose stamp is older than ``lost_after`` — their worker was killed,
lost its machine or hung — and ends them: Retrying when the queue will deliver them again,
otherwise Failed with an ``Error`` artifact saying the worker was lost (see
:meth:`~taskstatus.store.Store.lost` for which rows count).

A reaper never judges heartbeats that could not be written. Once a round of this process fails
(the store is unavailable), its reaper judges only stamps that were stale before the last round
that succeeded, until it has seen ``lost_after`` of healthy rounds again: by then every live
worker has had time to stamp its tasks and write the outcomes it queued. A child forked from a
reaping process (a prefork pool child, a work horse) stamps its tasks but leaves reaping to its
parent.

The same thread writes the progress a running task left pending (see
:class:`~taskstatus.tracking.LiveStatus`) once ``progress_interval`` has passed, so that a task
gone quiet in a long call still shows what it last reported. A forked work horse, whose worker
vouches for its task, starts the thread for that, at the task's first progress call, and to
take over vouching for its task should the worker die (see :meth:`Heartbeat.adopt_if_orphaned`).
"""

from __future__ import annotations

import _thread
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from .failurelog import FailureLog
from .forking import FORK_WAIT_SECONDS, quiesce_across_fork, reset_after_fork
from .messages import WORKER_LOST as LOST_MESSAGE

if TYPE_CHECKING:
    from .tracking import LiveStatus

__all__ = ["LOST_MESSAGE", "Heartbeat"]

log = logging.getLogger(__name__)
_beat_failures = FailureLog(log, "heartbeat")
_progress_failures = FailureLog(log, "writing progress")
#: The thread's name, as ``threading.current_thread()`` tells it.
THREAD_NAME = "taskstatus-heartbeat"


class Heartbeat:
    """The running tasks of this process, and the thread that vouches for them, reaps those
    of lost workers and writes the progress they leave pending.

    ``beat(task_ids)`` writes what this process queued and stamps the running tasks, and
    ``reap_lost(before)`` ends the tasks not stamped since ``before``, every ``interval``
    seconds. Both are bound methods, held weakly: the thread ends once their owner (the
    tracker's recorder) is gone.
    """

    def __init__(
        self,
        beat: Callable[[Sequence[str]], object],
        reap_lost: Callable[[datetime], object],
        interval: float,
        lost_after: float,
    ) -> None:
        self._beat = weakref.WeakMethod(beat)
        self._reap_lost = weakref.WeakMethod(reap_lost)
        self._interval = interval
        self._lost_after = timedelta(seconds=lost_after)
        quiesce_across_fork(self, lambda heartbeat: heartbeat._busy)
        # Threads do not survive fork; neither do the parent's running tasks.
        reset_after_fork(self, Heartbeat._after_fork)
        self._parent_reaps = False
        self._setup()

    def _after_fork(self) -> None:
        # A descendant of a reaping process leaves reaping to it, however deep.
        parent_reaps = self._reaps() or self._parent_reaps
        self._setup()
        self._parent_reaps = parent_reaps

    def _setup(self) -> None:
        #: Task ids of the tasks this process vouches for.
        self._running: set[str] = set()
        #: Whether this process vouches for tasks at all (a work horse does not).
        self._vouching = False
        #: Whether this process was started as a worker (see start_reaping).
        self._reaping = False
        #: Held while stamping, and by discard(): a task's retry is never written before a
        #: stamp that still counted it as running (which would make it look held here).
        self._stamping = threading.Lock()
        #: When the last round (writes, stamps, reaping) succeeded.
        self._healthy_at = _utcnow()
        #: After a failed round: when the last one before it succeeded (see _reap_before).
        self._outage_from: datetime | None = None
        #: Monotonic time from which the reaper trusts stamps again (inf: store still down).
        self._trusted_at = 0.0
        #: A work horse's parent, which vouches for its task: (parent pid, task id).
        self._parent: tuple[int, str] | None = None
        #: The live statuses whose pending progress the thread writes; changes counted.
        self._live: set[LiveStatus] = set()
        self._live_changes = 0
        #: The latest deadline of a status watched so far (see _loop).
        self._latest_deadline = float("-inf")
        self._lock = threading.Lock()
        #: Set to stop the thread, or to have it look at the live statuses again.
        self._wake = threading.Event()
        #: When the thread wakes next: a status watched later than that needs no wake-up.
        self._wake_at = float("inf")
        self._stopping = False
        #: Held while the thread uses the store; a fork waits for it.
        self._busy = threading.Lock()
        #: The thread's identifier, once started.
        self._thread: int | None = None

    def add(self, task_id: str) -> None:
        with self._lock:
            self._running.add(task_id)
            self._vouching = True
            self._ensure_thread()

    def discard(self, task_id: str) -> None:
        with self._stamping, self._lock:
            self._running.discard(task_id)
            if self._parent is not None and self._parent[1] == task_id:
                self._parent = None

    def adopt_if_orphaned(self, parent: int, task_id: str) -> None:
        """In a child forked to run ``task_id``, for which its ``parent`` vouches: should the
        parent die, vouch for the task from here (checked every interval, with
        ``os.getppid()``), until :meth:`discard`."""
        with self._lock:
            self._parent = (parent, task_id)
            self._ensure_thread()

    def _adopt(self) -> None:
        """Vouch for the task of a parent that died."""
        with self._lock:
            parent = self._parent
            if parent is None or os.getppid() == parent[0]:
                return
            self._parent = None
            self._running.add(parent[1])
            self._vouching = True
        log.warning(
            "taskstatus: the worker of task %s died; its work horse vouches for it", parent[1]
        )

    def start_reaping(self) -> None:
        """This process is a worker: reap lost tasks from now on, whether or not it runs any
        (unless it was forked from a process that reaps)."""
        with self._lock:
            if self._parent_reaps:
                return
            self._reaping = True
            self._ensure_thread()

    def _reaps(self) -> bool:
        return self._reaping or (self._vouching and not self._parent_reaps)

    def watch(self, live: LiveStatus) -> None:
        """Write what ``live`` leaves pending, until :meth:`unwatch`."""
        with self._lock:
            self._live.add(live)
            self._live_changes += 1
            self._latest_deadline = max(self._latest_deadline, live.deadline)
            self._ensure_thread()
            early = live.deadline < self._wake_at
        if early:  # most tasks start after the next wake-up: no thread switch per task
            self._wake.set()

    def unwatch(self, live: LiveStatus) -> None:
        with self._lock:
            self._live.discard(live)

    def _ensure_thread(self) -> None:
        # Started without threading.Thread.start(), which waits until the new thread runs:
        # an RQ work horse, forked per job, starts one for every job it runs (to notice its
        # worker dying), and that wait cost it about half a millisecond per job. Such a
        # thread is never joined, as a daemon thread.
        if self._thread is None:
            self._thread = _thread.start_new_thread(self._run, ())

    def _run(self) -> None:
        threading.current_thread().name = THREAD_NAME
        self._loop()

    def stop(self) -> None:
        """Stop the thread; once this returns, it no longer uses the store (which the tracker
        is closing)."""
        self._stopping = True
        self._wake.set()
        if self._busy.acquire(timeout=FORK_WAIT_SECONDS):
            self._busy.release()

    def _loop(self) -> None:
        # The first beat waits an interval: starting a task already stamped it.
        next_beat: float | None = None
        #: The count of watched statuses at the thread's last look, and the latest deadline
        #: among them then.
        seen, watched_until = 0, float("-inf")
        while True:
            beat, reap_lost = self._beat(), self._reap_lost()
            if beat is None or reap_lost is None:
                return
            now = time.monotonic()
            if next_beat is None:
                next_beat = now + self._interval
            try:
                with self._busy:
                    if self._stopping:
                        return
                    if now >= next_beat and (self._beating() or self._parent is not None):
                        next_beat = now + self._interval
                        self._adopt()
                        # A horse whose worker lives writes nothing here: no connection.
                        if self._beating():
                            self._round(beat, reap_lost)
                        _beat_failures.succeeded()
            except Exception:
                _beat_failures.failed("taskstatus heartbeat failed; retrying")
            with self._lock:
                live, changes = list(self._live), self._live_changes
                latest = self._latest_deadline
            look_again = self._write_pending(live)
            if changes != seen:
                seen, watched_until = changes, latest
            if watched_until > time.monotonic():
                # Statuses were watched, and may have ended already: look again when the
                # latest one's interval ends all the same, so that the next ones, due later,
                # find the thread due by then and need not wake it each.
                look_again = min(look_again, watched_until)
            del beat, reap_lost
            beating = self._beating() or self._parent is not None
            wake_at = min(next_beat if beating else float("inf"), look_again)
            with self._lock:
                if changes != self._live_changes:
                    continue  # a status was watched meanwhile: look at it too
                self._wake_at = wake_at
            timeout = None if wake_at == float("inf") else max(wake_at - time.monotonic(), 0)
            if self._wake.wait(timeout):
                self._wake.clear()
            if self._stopping:
                return

    def _beating(self) -> bool:
        return self._vouching or self._reaping

    def _round(
        self, beat: Callable[[Sequence[str]], object], reap_lost: Callable[[datetime], object]
    ) -> None:
        """Stamp (what this process queued is written first, so an outcome it holds is
        never judged lost) and reap; a failure makes the reaper distrust stamps for a while."""
        started = _utcnow()
        try:
            with self._stamping:
                with self._lock:
                    running = list(self._running)
                beat(running)
            if self._reaps():
                reap_lost(self._reap_before(started))
        except Exception:
            if self._outage_from is None:
                self._outage_from = self._healthy_at
            self._trusted_at = float("inf")
            raise
        self._healthy_at = started
        if self._outage_from is not None:
            if self._trusted_at == float("inf"):
                self._trusted_at = time.monotonic() + self._lost_after.total_seconds()
            elif time.monotonic() >= self._trusted_at:
                self._outage_from = None

    def _reap_before(self, now: datetime) -> datetime:
        """Tasks not stamped since this are lost: ``lost_after`` ago, or, until the store has
        been healthy for ``lost_after`` after a failed round, ``lost_after`` before the last
        round that succeeded before it (stamps due later may not have been writable)."""
        before = now - self._lost_after
        if self._outage_from is not None:
            before = min(before, self._outage_from - self._lost_after)
        return before

    def _write_pending(self, live: list[LiveStatus]) -> float:
        """Write the progress pending past its interval; when to look again."""
        look_again = float("inf")
        for status in live:
            try:
                with self._busy:
                    if self._stopping:
                        return look_again
                    at = status.write_pending(time.monotonic())
            except Exception:
                _progress_failures.failed("taskstatus could not write progress; retrying")
                at = time.monotonic() + 1.0
            look_again = min(look_again, at)
        return look_again


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)
