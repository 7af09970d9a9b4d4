"""Worker heartbeats: how a task whose worker died is found and ended.

A process running tracked tasks keeps one daemon thread per tracker. Every
``heartbeat_interval`` it writes one statement stamping ``heartbeat_at`` on the tasks running in
this process, then looks for running tasks whose stamp is older than ``lost_after`` — their
worker was killed, lost its machine or hung — and ends them: Retrying when the queue will deliver
them again, otherwise Failed with an ``Error`` artifact saying the worker was lost.
"""

from __future__ import annotations

import logging
import threading
import weakref
from datetime import timedelta
from typing import TYPE_CHECKING

from .events import TaskEvent
from .forking import FORK_WAIT_SECONDS, quiesce_across_fork, reset_after_fork
from .recorder import utcnow

if TYPE_CHECKING:
    from .tracker import Tracker

__all__ = ["LOST_MESSAGE", "Heartbeat"]

log = logging.getLogger(__name__)

LOST_MESSAGE = "The worker running this task was lost."


class Heartbeat:
    """The running tasks of this process, and the thread that vouches for them."""

    def __init__(self, tracker: Tracker) -> None:
        self._tracker = weakref.ref(tracker)
        #: Task ids of the tasks running in this process.
        self._running: set[str] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        #: Held while the thread uses the store; a fork waits for it.
        self._busy = threading.Lock()
        self._thread: threading.Thread | None = None
        quiesce_across_fork(self, lambda heartbeat: heartbeat._busy)
        # Threads do not survive fork; neither do the parent's running tasks.
        reset_after_fork(self, Heartbeat._forget_parent)

    def _forget_parent(self) -> None:
        self._lock = threading.Lock()
        self._busy = threading.Lock()
        self._running = set()
        self._thread = None
        self._wake = threading.Event()

    def add(self, task_id: str) -> None:
        with self._lock:
            self._running.add(task_id)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="taskstatus-heartbeat", daemon=True
                )
                self._thread.start()

    def discard(self, task_id: str) -> None:
        with self._lock:
            self._running.discard(task_id)

    def stop(self) -> None:
        """Stop the thread; once this returns, it no longer uses the store (which the tracker
        is closing)."""
        self._wake.set()
        if self._busy.acquire(timeout=FORK_WAIT_SECONDS):
            self._busy.release()

    def _loop(self) -> None:
        # The first beat waits an interval: starting a task already stamped it.
        while True:
            tracker = self._tracker()
            if tracker is None:
                return
            interval = tracker.settings.heartbeat_interval
            del tracker
            if self._wake.wait(interval):
                return
            tracker = self._tracker()
            if tracker is None:
                return
            try:
                with self._busy:
                    if self._wake.is_set():
                        return
                    self.beat(tracker)
                    reap_lost(tracker)
            except Exception:
                log.warning("taskstatus heartbeat failed; retrying", exc_info=True)
            del tracker

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
