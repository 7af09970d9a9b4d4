"""Write-behind for a worker's hot path: task starts and successes, written in batches.

A trivial task costs a queue about a millisecond; two synchronous database writes (start and
success) would double that. So a worker process only queues those two events, and one thread
writes what has gathered every ``write_interval`` seconds — one UPDATE per kind for the whole
batch — then runs what follows from them (containers starting and ending, ``taskstatus_stopped``).
Everything else (progress, retries, failures, cancels, reads through the tracker) first writes
out what is queued, so a process always reads its own writes and events keep their order.

Each event is queued with the time it happened, and written with it: a status shows when its
task started and ended, not when the batch was written.

Skipping work that was canceled before it started must not wait for a write: the writer keeps
the ids of such tasks, refreshed with each batch (and at a task's start if the worker was
idle), and ``start()`` refuses those at once.

A queue adapter turns this on in its worker processes (``Lifecycle.batch_writes``) because it
knows their life cycle: it writes the queue when a worker process shuts down, including the
ones that leave through ``os._exit`` where ``atexit`` never runs. Nothing queued is dropped: a
failed batch stays queued and is retried, and the queue is also written at interpreter exit.
"""

from __future__ import annotations

import atexit
import functools
import logging
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from .exceptions import TaskCanceledException
from .failurelog import FailureLog
from .forking import quiesce_across_fork, reset_after_fork

if TYPE_CHECKING:
    from .events import TaskEvent

__all__ = ["WriteBehind", "call_each"]

log = logging.getLogger(__name__)
_failures = FailureLog(log, "writing queued task events")

#: A cancel committed this long after its own clock reading is still seen.
CLOCK_MARGIN = timedelta(seconds=5)
#: Longest pause between two attempts to write a batch the store refused.
MAX_BACKOFF = 5.0

#: The kinds of queued event and of batched write (not the transitions of the same names in
#: :mod:`taskstatus.models`, which the recorder maps them to).
BATCHED_START = "start"
BATCHED_SUCCESS = "succeed"
#: A start and the success of the same task, written as one.
BATCHED_RUN = "run"

#: A queued event: its kind, the event and when it happened.
Queued = tuple[str, "TaskEvent", datetime]
#: A callback waiting for a write, and the item it is called with.
Waiting = tuple[Callable[[list[Any]], object], object]

_Item = TypeVar("_Item")


class WriteBehind:
    """The queued starts and successes of one process, and the thread that writes them.

    ``write`` receives ``(kind, events, at, started)`` with all events of one kind that can be
    written together, in order, when each happened and, for a run, when it started (else
    None); ``canceled`` returns the ids of tasks canceled before they started
    whose status changed since a given time.
    """

    def __init__(
        self,
        interval: float,
        write: Callable[
            [str, Sequence[TaskEvent], Sequence[datetime], Sequence[datetime] | None], None
        ],
        canceled: Callable[[datetime], list[str]],
        clock: Callable[[], datetime],
        horizon: timedelta,
    ) -> None:
        self.interval = interval
        self._write = write
        self._canceled_since = canceled
        self._clock = clock
        self._horizon = horizon
        self._fresh_after = max(2 * interval, 0.1)
        self._canceled: set[str] = set()
        self._polled_at: datetime | None = None
        self._fresh_until = 0.0
        self._setup()
        quiesce_across_fork(self, lambda writer: writer._busy)
        # A child starts empty: what the parent queued is the parent's to write. It keeps the
        # ids of canceled tasks, as fresh as they were in the parent.
        reset_after_fork(self, WriteBehind._setup)
        atexit.register(_drain_at_exit, weakref.ref(self))

    def _setup(self) -> None:
        self._queue: list[Queued] = []
        self._lock = threading.Lock()
        #: Held while writing; one batch at a time, and a fork waits for it.
        self._busy = threading.Lock()
        #: The thread writing queued events now (see drain).
        self._writing: int | None = None
        self._wake = threading.Event()
        #: Set when callbacks wait for a write: the thread writes at once.
        self._urgent = threading.Event()
        #: Run after the next write that succeeds (a queue's acknowledgements).
        self._after: list[Waiting] = []
        #: call_later: handle -> (monotonic time due, callback).
        self._later: dict[object, tuple[float, Callable[[], object]]] = {}
        self._thread: threading.Thread | None = None
        self._backoff = 0.0
        #: Monotonic time of the thread's last write of everything queued (not only what
        #: acknowledgements wait for).
        self._wrote_all_at = float("-inf")

    # -- the hot path -----------------------------------------------------------------------
    def start(self, event: TaskEvent, at: datetime, *, check_canceled: bool = True) -> None:
        """Queue the start of a task at ``at``; raise TaskCanceledException if it was
        canceled."""
        if check_canceled and self.canceled_unstarted(event.task_id):
            raise TaskCanceledException(f"task {event.task_id} was canceled before it started")
        self._put(BATCHED_START, event, at)

    def canceled_unstarted(self, task_id: str, *, refresh: bool = True) -> bool:
        """Whether the task was canceled before it started, as of the last read of such ids
        (read again first if that was a while ago, unless not to ``refresh``)."""
        if refresh:
            self.refresh_canceled()
        return task_id in self._canceled

    def refresh_canceled(self) -> None:
        """Read the ids of tasks canceled before they started, unless read recently."""
        if time.monotonic() >= self._fresh_until:
            with self._busy:
                self._poll_canceled()

    def call_later(self, delay: float, callback: Callable[[], object]) -> object:
        """Run ``callback`` on the thread, as a write, once ``delay`` seconds have passed (at
        the thread's next round after that), unless :meth:`cancel_call` comes first."""
        handle = object()
        with self._lock:
            self._later[handle] = (time.monotonic() + delay, callback)
            self._ensure_thread()
        return handle

    def cancel_call(self, handle: object) -> bool:
        """Cancel a :meth:`call_later`: True if it had not run, and now never will; False if
        it ran (this waits for it to finish)."""
        with self._lock:
            if self._later.pop(handle, None) is not None:
                return True  # a write in progress goes on: this caller need not wait for it
        with self._busy:  # taken by the thread: it runs now, or has run
            return False

    def succeed(self, event: TaskEvent, at: datetime) -> None:
        """Queue the success of a task at ``at``."""
        self._put(BATCHED_SUCCESS, event, at)

    def after_write(self, callback: Callable[[list[_Item]], object], item: _Item) -> None:
        """Call ``callback`` on the writer thread once the outcomes queued so far are stored
        (with the starts of their tasks; the starts of tasks still running wait for the
        thread's next round, as usual). The items given with one callback in one round reach
        it in one call, in order: what is cheaper done together is done together.

        A queue adapter acknowledges messages this way: its worker thread goes on with the
        next message instead of waiting for the write, and the thread writes at once, for
        every acknowledgement waiting (a group commit), then sends them. At once matters: a
        queue that prefetches a bounded number of messages (Dramatiq) takes no more while
        they wait."""
        with self._lock:
            self._after.append((callback, item))
            self._ensure_thread()
        if not self._urgent.is_set():  # set: the thread has yet to take what waits
            self._urgent.set()

    def _put(self, kind: str, event: TaskEvent, at: datetime) -> None:
        with self._lock:
            self._queue.append((kind, event, at))
            self._ensure_thread()

    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=_loop, args=(weakref.ref(self),), name="taskstatus-writer", daemon=True
            )
            self._thread.start()

    # -- writing ----------------------------------------------------------------------------
    def drain(self, *, final: bool = False, ended_only: bool = False) -> None:
        """Write what is queued now, and wait for a write in progress: once this returns,
        every event queued before it is stored. ``ended_only`` writes only the events of
        tasks that ended (what a queue must store before it acknowledges them); the starts of
        running tasks stay queued, to be written with their end as one.

        Raises the store's error (the events stay queued); ``final`` (at exit) logs it instead,
        loudly, since nothing can retry later.

        Called back from the write in progress on this thread (a container it ended cancels a
        waiting sibling, a ``taskstatus_stopped`` plugin reads), this returns at once: the
        write goes on with the rest of its batch afterwards."""
        if self._writing == threading.get_ident():
            return
        if not self._queue and not self._busy.locked():
            return
        with self._busy:
            try:
                self._write_queued(ended_only=ended_only)
                _failures.succeeded()
            except Exception:
                if not final:
                    raise
                log.exception(
                    "taskstatus could not write %d queued task events before exit",
                    len(self._queue),
                )

    def _write_queued(self, *, ended_only: bool = False) -> None:
        with self._lock:
            if ended_only:
                ended = {event.task_id for kind, event, _ in self._queue if kind == BATCHED_SUCCESS}
                queued = [item for item in self._queue if item[1].task_id in ended]
                self._queue = [item for item in self._queue if item[1].task_id not in ended]
            else:
                queued, self._queue = self._queue, []
        if not queued:
            return
        self._writing = threading.get_ident()
        try:
            for segment in _segments(queued):
                for kind, events, at, started, items in _by_kind(segment):
                    self._write(kind, events, at, started)
                    # Written: never again (a start written twice would count an attempt).
                    written = {id(item) for item in items}
                    queued = [item for item in queued if id(item) not in written]
            if time.monotonic() >= self._fresh_until - self.interval:
                self._poll_canceled()  # at most about once an interval, however often written
        except BaseException:
            with self._lock:
                self._queue[:0] = queued
            raise
        finally:
            self._writing = None

    def _poll_canceled(self) -> None:
        now = self._clock()
        since = now - self._horizon if self._polled_at is None else self._polled_at - CLOCK_MARGIN
        self._canceled.update(self._canceled_since(since))
        self._polled_at = now
        self._fresh_until = time.monotonic() + self._fresh_after

    def stop(self) -> None:
        """Write what is queued, run what waits for it, and stop the thread (the tracker is
        closing)."""
        self._wake.set()
        self._urgent.set()
        self.drain(final=True)
        self.run_waiting()

    def run_waiting(self) -> None:
        """Write what is queued and run the callbacks waiting for it, now, on this thread (a
        worker shutting down)."""
        with self._lock:
            waiting, self._after = self._after, []
        if waiting:
            self.drain()
        _call_all(waiting)

    def _round(self) -> bool:
        """One pass of the thread: write what is queued (at once when callbacks wait), then
        run those callbacks; False when told to stop."""
        self._urgent.wait(self.interval + self._backoff)
        self._urgent.clear()
        if self._wake.is_set():
            return False
        with self._lock:
            waiting, self._after = self._after, []
        if self._later:
            self._run_due()
        if not self._queue and not waiting:
            return True
        stopped = False
        # Between two rounds of an interval, only what acknowledgements wait for: a running
        # task's start then often joins its success, one write instead of two.
        now = time.monotonic()
        ended_only = bool(waiting) and now < self._wrote_all_at + self.interval
        try:
            with self._busy:
                # Stopped meanwhile: stop() wrote the queue, and the store is closing.
                stopped = self._wake.is_set()
                if not stopped:
                    self._write_queued(ended_only=ended_only)
                    if not ended_only:
                        self._wrote_all_at = now
            self._backoff = 0.0
            _failures.succeeded()
        except Exception:
            with self._lock:
                self._after[:0] = waiting  # still not stored: they wait for the next write
            self._backoff = min(MAX_BACKOFF, max(self._backoff * 2, self.interval, 0.05))
            # Acknowledgements waiting for this write are retried after the backoff alone;
            # the rest at the next round, which waits an interval more.
            delay = self._backoff if waiting else self.interval + self._backoff
            _failures.failed(
                "taskstatus could not write %d task events; retrying in %.1f s",
                len(self._queue),
                delay,
            )
            if waiting:
                self._wake.wait(self._backoff)
                self._urgent.set()
            return True
        _call_all(waiting)
        return not stopped

    def _run_due(self) -> None:
        now = time.monotonic()
        with self._busy:
            if self._wake.is_set():
                return  # stopped: the store is closing
            with self._lock:
                due = [handle for handle, (at, _) in self._later.items() if at <= now]
                callbacks = [self._later.pop(handle)[1] for handle in due]
            for callback in callbacks:
                _call(callback)


def _call(callback: Callable[[], object]) -> None:
    try:
        callback()
    except Exception:
        log.exception("a callback waiting for taskstatus's write failed")


def call_each(callbacks: list[Callable[[], object]]) -> None:
    """Call each of these callbacks, given to :meth:`WriteBehind.after_write` as its items."""
    for callback in callbacks:
        _call(callback)


def _call_all(waiting: list[Waiting]) -> None:
    """Call each callback once, with its items in the order they were given."""
    items: dict[Callable[[list[Any]], object], list[Any]] = {}
    for callback, item in waiting:
        items.setdefault(callback, []).append(item)
    for callback, given in items.items():
        _call(functools.partial(callback, given))


def _drain_at_exit(ref: weakref.ref[WriteBehind]) -> None:
    writer = ref()
    if writer is not None:
        writer.drain(final=True)


def _loop(ref: weakref.ref[WriteBehind]) -> None:
    while (writer := ref()) is not None and writer._round():
        del writer


def _segments(queued: list[Queued]) -> list[list[Queued]]:
    """Split the queue where writing all starts before all successes would reorder the events
    of one task (the same task started twice, or started again after it ended)."""
    segments: list[list[Queued]] = [[]]
    started: set[str] = set()
    ended: set[str] = set()
    for item in queued:
        kind, task_id = item[0], item[1].task_id
        if task_id in ended or (kind == BATCHED_START and task_id in started):
            segments.append([])
            started, ended = set(), set()
        (started if kind == BATCHED_START else ended).add(task_id)
        segments[-1].append(item)  # the queue's own item: written items leave the queue by id
    return segments


def _by_kind(
    segment: list[Queued],
) -> list[tuple[str, list[TaskEvent], list[datetime], list[datetime] | None, list[Queued]]]:
    """The writes of one segment, each as (kind, events, when each happened, when each run
    started, the queue items it covers): starts, runs (a start and its success in one write,
    described by the start's event, at the success's time) and successes."""
    ends = {item[1].task_id: item for item in segment if item[0] == BATCHED_SUCCESS}
    writes: dict[str, tuple[list[TaskEvent], list[datetime], list[datetime], list[Queued]]] = {
        BATCHED_START: ([], [], [], []),
        BATCHED_RUN: ([], [], [], []),
        BATCHED_SUCCESS: ([], [], [], []),
    }
    for item in segment:
        kind, event, at = item
        if kind != BATCHED_START:
            continue
        end = ends.pop(event.task_id, None)
        events, times, starts, items = writes[BATCHED_START if end is None else BATCHED_RUN]
        events.append(event)
        times.append(at if end is None else end[2])
        starts.append(at)
        items.append(item)
        if end is not None:
            items.append(end)
    for item in ends.values():
        events, times, starts, items = writes[BATCHED_SUCCESS]
        events.append(item[1])
        times.append(item[2])
        items.append(item)
    return [
        (kind, events, times, starts if kind == BATCHED_RUN else None, items)
        for kind, (events, times, starts, items) in writes.items()
        if events
    ]
