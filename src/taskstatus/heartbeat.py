"""Worker heartbeats: how a task whose worker died is found and ended.

A process running tracked tasks keeps one daemon thread per tracker. Every
``heartbeat_interval`` it writes one statement stamping ``heartbeat_at`` on the tasks running in
this process, then looks for running tasks whose stamp is older than ``lost_after`` — their
worker was killed, lost its machine or hung — and ends them: Retrying when the queue will deliver
them again, otherwise Failed with an ``Error`` artifact saying the worker was lost.

The same thread writes the progress a running task left pending (see
:class:`~taskstatus.tracking.LiveStatus`) once ``progress_interval`` has passed, so that a task
gone quiet in a long call still shows what it last reported. A forked work horse, whose worker
vouches for its task, starts the thread only for that, at the task's first progress call.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from datetime import timedelta
from typing import TYPE_CHECKING

from .events import TaskEvent
from .forking import FORK_WAIT_SECONDS, quiesce_across_fork, reset_after_fork
from .recorder import utcnow

if TYPE_CHECKING:
    from .tracker import Tracker
    from .tracking import LiveStatus

__all__ = ["LOST_MESSAGE", "Heartbeat"]

log = logging.getLogger(__name__)

LOST_MESSAGE = "The worker running this task was lost."


class Heartbeat:
    """The running tasks of this process, and the thread that vouches for them and writes
    the progress they leave pending."""

    def __init__(self, tracker: Tracker) -> None:
        self._tracker = weakref.ref(tracker)
        quiesce_across_fork(self, lambda heartbeat: heartbeat._busy)
        # Threads do not survive fork; neither do the parent's running tasks.
        reset_after_fork(self, Heartbeat._setup)
        self._setup()

    def _setup(self) -> None:
        #: Task ids of the tasks this process vouches for.
        self._running: set[str] = set()
        #: Whether this process vouches for tasks at all (a work horse does not).
        self._vouching = False
        #: The live statuses whose pending progress the thread writes; changes counted.
        self._live: set[LiveStatus] = set()
        self._live_changes = 0
        self._lock = threading.Lock()
        #: Set to stop the thread, or to have it look at the live statuses again.
        self._wake = threading.Event()
        #: When the thread wakes next: a status watched later than that needs no wake-up.
        self._wake_at = float("inf")
        self._stopping = False
        #: Held while the thread uses the store; a fork waits for it.
        self._busy = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, task_id: str) -> None:
        with self._lock:
            self._running.add(task_id)
            self._vouching = True
            self._ensure_thread()

    def discard(self, task_id: str) -> None:
        with self._lock:
            self._running.discard(task_id)

    def watch(self, live: LiveStatus) -> None:
        """Write what ``live`` leaves pending, until :meth:`unwatch`."""
        with self._lock:
            self._live.add(live)
            self._live_changes += 1
            self._ensure_thread()
            early = live.deadline < self._wake_at
        if early:  # most tasks start after the next wake-up: no thread switch per task
            self._wake.set()

    def unwatch(self, live: LiveStatus) -> None:
        with self._lock:
            self._live.discard(live)

    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._loop, name="taskstatus-heartbeat", daemon=True
            )
            self._thread.start()

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
        while True:
            tracker = self._tracker()
            if tracker is None:
                return
            now = time.monotonic()
            interval = tracker.settings.heartbeat_interval
            if next_beat is None:
                next_beat = now + interval
            try:
                with self._busy:
                    if self._stopping:
                        return
                    if self._vouching and now >= next_beat:
                        next_beat = now + interval
                        self.beat(tracker)
                        reap_lost(tracker)
            except Exception:
                log.warning("taskstatus heartbeat failed; retrying", exc_info=True)
            with self._lock:
                live, changes = list(self._live), self._live_changes
            look_again = self._write_pending(live)
            del tracker
            wake_at = min(next_beat if self._vouching else float("inf"), look_again)
            with self._lock:
                if changes != self._live_changes:
                    continue  # a status was watched meanwhile: look at it too
                self._wake_at = wake_at
            timeout = None if wake_at == float("inf") else max(wake_at - time.monotonic(), 0)
            if self._wake.wait(timeout):
                self._wake.clear()
            if self._stopping:
                return

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
                log.warning("taskstatus could not write progress; retrying", exc_info=True)
                at = time.monotonic() + 1.0
            look_again = min(look_again, at)
        return look_again

    def beat(self, tracker: Tracker) -> None:
        with self._lock:
            running = list(self._running)
        if running:
            tracker.recorder.drain()  # their starts first: only running tasks take a beat
            keys = (tracker.recorder.key(task_id) for task_id in running)
            tracker.store.beat([key.uuid for key in keys if key is not None], utcnow())


def reap_lost(tracker: Tracker, limit: int = 500) -> int:
    """End the running tasks whose worker has not been heard of for ``lost_after``."""
    before = utcnow() - timedelta(seconds=tracker.settings.lost_after)
    tracker.recorder.drain()
    lost = tracker.store.lost(before, limit)
    for status in lost:
        event = TaskEvent(
            task_id=status.task_id,
            queue=status.queue,
            task_class=status.task_class,
            message=LOST_MESSAGE,
        )
        if status.redeliver_on_loss:
            log.warning("task %s: worker lost; the queue will deliver it again", status.task_id)
            tracker.hook.taskstatus_retry(event=event)
        else:
            log.warning("task %s: worker lost; marking it failed", status.task_id)
            tracker.hook.taskstatus_fail(event=event)
    return len(lost)
