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
from collections.abc import Callable, Sequence
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


class Heartbeat:
    """The running tasks of this process, and the thread that vouches for them and writes
    the progress they leave pending.

    ``beat(task_ids)`` stamps the running tasks and ``reap_lost()`` ends those of lost
    workers, every ``interval`` seconds. Both are bound methods, held weakly: the thread ends
    once their owner (the tracker and its recorder) is gone.
    """

    def __init__(
        self,
        beat: Callable[[Sequence[str]], object],
        reap_lost: Callable[[], object],
        interval: float,
    ) -> None:
        self._beat = weakref.WeakMethod(beat)
        self._reap_lost = weakref.WeakMethod(reap_lost)
        self._interval = interval
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
                    if self._vouching and now >= next_beat:
                        next_beat = now + self._interval
                        with self._lock:
                            running = list(self._running)
                        if running:
                            beat(running)
                        reap_lost()
                        _beat_failures.succeeded()
            except Exception:
                _beat_failures.failed("taskstatus heartbeat failed; retrying")
            with self._lock:
                live, changes = list(self._live), self._live_changes
            look_again = self._write_pending(live)
            del beat, reap_lost
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
                _progress_failures.failed("taskstatus could not write progress; retrying")
                at = time.monotonic() + 1.0
            look_again = min(look_again, at)
        return look_again
