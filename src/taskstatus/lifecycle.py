"""The lifecycle API: what a queue adapter calls, one method per step of a task's life.

An adapter turns its queue's own events (Celery signals, Dramatiq middleware, RQ job and worker
hooks) into these calls and touches nothing else of ours: no store, recorder or writer. Everything
every queue shares lives here once: the owner and group of a published task, the outcome an
exception means, the live handle behind ``taskstatus.current()``, batched writes in workers and
a run handed to a forked child. The application's API is :class:`~taskstatus.Tracker`; an adapter
reaches this object as ``tracker.lifecycle``. ``docs/hooks.md`` describes it for adapter authors.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import logging
import time
import traceback as traceback_module
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar, overload

from . import messages
from .events import TaskEvent
from .exceptions import StoreError, TaskCanceledException
from .failurelog import FailureLog
from .handoff import HandOff
from .heartbeat import Heartbeat
from .hookcall import EventHook
from .models import TaskStatus
from .recorder import Recorder, collecting
from .settings import Settings
from .tracking import LiveCalls, LiveStatus, activate, deactivate
from .writebehind import call_each

__all__ = ["Lifecycle"]

log = logging.getLogger(__name__)
T = TypeVar("T")
#: ``after_write`` given a callback alone.
_ALONE: Any = object()

#: The first wait before a run deferred for want of the store is delivered again; it doubles
#: with each deferral of the same run, up to :data:`MAX_DEFERRAL`.
FIRST_DEFERRAL = 0.5
#: The longest wait between two deliveries of a run deferred for want of the store.
MAX_DEFERRAL = 30.0
#: The longest wait before a message held unacknowledged meanwhile is put back: a broker hands
#: a message held too long to another worker (Redis's visibility timeout).
MAX_HELD_DEFERRAL = 2.0
#: The longest pause between two attempts to store an outcome before its message is
#: acknowledged.
MAX_STORE_PAUSE = 5.0

_unsent_failures = FailureLog(log, "marking unsent tasks")
_outcome_failures = FailureLog(log, "storing outcomes before their acknowledgement")

#: The container that tasks published now join (``taskstatus.group`` blocks).
_joining: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "taskstatus_joining", default=None
)
#: The tasks recorded inside the innermost :meth:`Lifecycle.sending` block, with the
#: lifecycle that recorded each.
_sending: contextvars.ContextVar[list[tuple[Lifecycle, str]] | None] = contextvars.ContextVar(
    "taskstatus_sending", default=None
)


@dataclasses.dataclass
class _Batch:
    """An open :meth:`Lifecycle.batch` block: the records it holds back (by recorder), and
    the sends it holds, each with the tasks whose message it sends."""

    collected: dict[Recorder, dict[str, TaskEvent]]
    sends: list[tuple[Callable[[], object], list[tuple[Lifecycle, str]]]] = dataclasses.field(
        default_factory=list
    )
    #: Tasks recorded (or named by :meth:`Lifecycle.sends`) since the last held send: the
    #: next send carries their messages.
    recorded: list[tuple[Lifecycle, str]] = dataclasses.field(default_factory=list)

    def write(self) -> None:
        """Record what the block has collected so far, one write per store."""
        written: list[Recorder] = []
        try:
            for recorder, events in self.collected.items():
                recorder.publish_many(list(events.values()))
                written.append(recorder)
        except Exception as exc:
            # Another store's records did not make it: nothing of the block is sent.
            pairs = self.recorded + [pair for _, carried in self.sends for pair in carried]
            _all_unsent([pair for pair in pairs if pair[0]._recorder in written], exc)
            raise
        finally:
            self.collected.clear()

    def pending(self, task_id: str) -> bool:
        """Whether ``task_id`` is among the records not written yet."""
        return any(task_id in events for events in self.collected.values())


#: The innermost open :meth:`Lifecycle.batch` block.
_batch: contextvars.ContextVar[_Batch | None] = contextvars.ContextVar(
    "taskstatus_batch", default=None
)


def _note_sent(lifecycle: Lifecycle, task_id: str) -> None:
    """Count ``task_id`` among the tasks of the open :meth:`Lifecycle.sending` block, and
    among those of the next send an open :meth:`Lifecycle.batch` holds."""
    recorded = _sending.get()
    if recorded is not None:
        recorded.append((lifecycle, task_id))
    batch = _batch.get()
    if batch is not None:
        batch.recorded.append((lifecycle, task_id))


def _all_unsent(pairs: Sequence[tuple[Lifecycle, str]], exc: BaseException) -> None:
    """End as :meth:`Lifecycle.unsent` the tasks of these (lifecycle, task id) pairs."""
    for lifecycle in dict.fromkeys(lifecycle for lifecycle, _ in pairs):
        lifecycle.unsent([task_id for who, task_id in pairs if who is lifecycle], exc)


class Lifecycle:
    """The steps of a task's life, as a queue adapter reports them.

    Publish side: :meth:`sending` around each send, :meth:`publish`, :meth:`publish_container`,
    :meth:`sends`, :meth:`seal`, :meth:`cancel`, :meth:`unsent`.
    Run side: :meth:`start`, then :meth:`end` (or :meth:`release` when the message goes back
    to the queue). Workers: :meth:`worker_started` and :meth:`drain`; forking workers:
    :meth:`prepare_for_fork` and the hand-off methods.
    """

    def __init__(
        self,
        settings: Settings,
        hook: Any,
        recorder: Recorder,
        heartbeat: Heartbeat,
        live_calls: LiveCalls,
        find: Callable[[str], TaskStatus | None],
    ) -> None:
        self._settings = settings
        self._hook = hook
        #: The hooks of every run, called directly (see :mod:`taskstatus.hookcall`).
        self._prerun = EventHook(hook.taskstatus_prerun)
        self._succeed = EventHook(hook.taskstatus_succeed)
        self._postrun = EventHook(hook.taskstatus_postrun)
        self._recorder = recorder
        self._heartbeat = heartbeat
        self._live_calls = live_calls
        self._find = find

    # -- publish side ------------------------------------------------------------------------
    def publish(self, event: TaskEvent) -> None:
        """Record a task about to be sent, before its message leaves (inside an open
        ``taskstatus.group`` it joins the group). A missing owner raises TypeError."""
        if event.parent_task_id is None and (container := _joining.get()) is not None:
            event = dataclasses.replace(event, parent_task_id=container)
        self._hook.taskstatus_publish(event=event)
        _note_sent(self, event.task_id)

    @staticmethod
    @contextlib.contextmanager
    def sending() -> Iterator[None]:
        """Wrap the sending of a message (or a batch) to the broker, records included: if
        anything in the block raises, the tasks recorded in it (and those named by
        :meth:`sends`) are ended as :meth:`unsent`, and the exception goes on unchanged.
        Nothing is looked up unless the block raises after a record. A block inside another
        is part of it (RQ's ``enqueue_many`` inside a group's, whose pipeline saves both)."""
        if _sending.get() is not None:
            yield
            return
        recorded: list[tuple[Lifecycle, str]] = []
        token = _sending.set(recorded)
        try:
            yield
        except Exception as exc:
            _all_unsent(recorded, exc)
            raise
        finally:
            _sending.reset(token)

    def sends(self, task_id: str) -> None:
        """The message being sent (in a :meth:`sending` block) is that of ``task_id``,
        recorded earlier (the next step of a chain, sent by the worker that ran the step
        before). What this process has queued is written first, as :meth:`publish` does: the
        step may run elsewhere, and end its container, before the next batch. If it cannot
        be sent, the task ends as :meth:`unsent`."""
        self.drain()
        _note_sent(self, task_id)

    @staticmethod
    @contextlib.contextmanager
    def batch() -> Iterator[None]:
        """Publish many tasks with one write: the tasks published in this block (on this
        thread or task) are recorded together when it ends, in one multi-row INSERT per
        store, and only then are their messages (held by :meth:`deliver`) sent, in order.
        If the records cannot be written, no message is sent and the store's error is
        raised; if the block raises, nothing is recorded or sent. A block inside another is
        part of it. ``taskstatus.batch()`` is this block for application code."""
        if _batch.get() is not None:
            yield
            return
        with collecting() as collected:
            batch = _Batch(collected)
            token = _batch.set(batch)
            try:
                yield
            finally:
                _batch.reset(token)
        batch.write()
        for index, (send, _) in enumerate(batch.sends):
            try:
                send()
            except Exception as exc:
                _all_unsent([pair for _, pairs in batch.sends[index:] for pair in pairs], exc)
                raise

    @staticmethod
    def deliver(send: Callable[[], T], held: T) -> T:
        """Send a message now with ``send()`` and return what it returns, or, inside a
        :meth:`batch` block, hold ``send`` until the block's records are written and return
        ``held`` (what the queue's own send would have returned, as far as it is known)."""
        batch = _batch.get()
        if batch is None:
            return send()
        batch.sends.append((send, batch.recorded))
        batch.recorded = []
        return held

    @staticmethod
    def write_collected() -> None:
        """Inside a :meth:`batch` block, write the records it has collected so far now (the
        sends it holds stay held): before a send the adapter cannot hold, such as RQ's
        writes into a Redis pipeline its caller executes. Outside a block, nothing."""
        batch = _batch.get()
        if batch is not None and batch.collected:
            batch.write()

    def _write_pending(self, task_id: str) -> None:
        """Inside a :meth:`batch` block, write its records now if ``task_id`` is among them:
        what is about to be read or changed must exist (its messages stay held)."""
        batch = _batch.get()
        if batch is not None and batch.pending(task_id):
            batch.write()

    def unsent(self, task_ids: Sequence[str], exception: BaseException) -> None:
        """The messages of these recorded tasks were never sent (``exception``: why): those
        still Pending end Failed with :data:`~taskstatus.messages.UNSENT` as their error,
        and their containers end as for any failed child. Never raises: a failure here is
        logged, and the caller raises ``exception``."""
        traceback = "".join(traceback_module.format_exception(exception))
        try:
            self._recorder.unsent(task_ids, messages.UNSENT, traceback)
        except Exception:
            _unsent_failures.failed("could not mark %d unsent tasks failed", len(task_ids))
        else:
            _unsent_failures.succeeded()

    def publish_container(
        self,
        task_id: str,
        *,
        queue: str,
        kind: str,
        name: str | None,
        user_id: str | None,
        parent_task_id: str | None = None,
        sealed: bool = True,
        sequential: bool = False,
    ) -> None:
        """Record a queue's container (a chain, a pipeline...) whose steps are published next;
        an unsealed one ends only after :meth:`seal`. ``sequential``: its children run one
        after another (a chain, not a group), so a failed step cancels those still waiting
        and a running step's stage shows on it; stored with the status, so that a process
        without the adapter (the web server, the CLI) applies the same rule."""
        self.publish(
            TaskEvent(
                task_id=task_id,
                queue=queue,
                task_class=kind,
                name=name or kind,
                user_id=user_id,
                parent_task_id=parent_task_id,
                is_container=True,
                sealed=sealed,
                total_steps=0,
                sequential=sequential,
            )
        )

    @contextlib.contextmanager
    def joining(self, container_task_id: str) -> Iterator[None]:
        """Tasks published in this block (on this thread or task) become children of the
        container, unless they name another parent."""
        token = _joining.set(container_task_id)
        try:
            yield
        finally:
            _joining.reset(token)

    def seal(self, task_id: str) -> None:
        """No more children will join the container ``task_id``; it ends once they have."""
        self._write_pending(task_id)
        self._recorder.seal(task_id)

    def cancel(self, event: TaskEvent) -> None:
        """Cancel the task of ``event`` (by its task id), which its queue will not run: a
        dependent of a failed job, a discarded message. Ended tasks stay as they are."""
        self._write_pending(event.task_id)
        self._hook.taskstatus_cancel(event=event)

    def find(self, task_id: str) -> TaskStatus | None:
        """The status of the queue's task id, or None: whether a task was recorded already
        (what this process has queued is written first)."""
        self._write_pending(task_id)
        return self._find(task_id)

    # -- run side ----------------------------------------------------------------------------
    def deferral(
        self, exc: BaseException, deferrals: int = 0, *, held: bool = False
    ) -> float | None:
        """The start of a run failed with ``exc``: if that is the store being unavailable, how
        many seconds the queue should wait before it delivers the run again, having deferred
        it ``deferrals`` times already (a doubling backoff, capped; shorter for a message
        the worker holds unacknowledged while it waits, ``held``); None for any other error.

        The adapter then puts the message back (the status stays Pending and no attempt is
        counted) instead of running the task untracked or losing it."""
        if not isinstance(exc, StoreError):
            return None
        longest = MAX_HELD_DEFERRAL if held else MAX_DEFERRAL
        return min(longest, FIRST_DEFERRAL * 2.0 ** min(max(deferrals, 0), 16))

    def store_ended(self, what: str) -> None:
        """Write the outcomes of ended tasks queued here, trying again (with a bounded
        backoff) until they are stored: what an adapter calls before acknowledging their
        messages, so that a worker killed meanwhile leaves them to be delivered again."""
        self._store(what, ended_only=True)

    def _store(self, what: str, *, ended_only: bool) -> None:
        """Drain until it succeeds (``ended_only``: only what ended, see :meth:`drain`)."""
        pause = FIRST_DEFERRAL
        while True:
            try:
                self.drain(ended_only=ended_only)
            except StoreError:
                _outcome_failures.failed(
                    "could not store the outcome of %s; holding it (its message is not "
                    "acknowledged) until it is stored: trying again in %.1f s",
                    what,
                    pause,
                )
            else:
                _outcome_failures.succeeded()
                return
            time.sleep(pause)
            pause = min(MAX_STORE_PAUSE, pause * 2)

    def admit(self) -> None:
        """Before a worker takes a message to run: read now what starting its task reads (the
        ids of tasks canceled before they started, unless read recently), so that a store out
        of reach raises here (see :meth:`deferral`) while the message can still go back."""
        self._recorder.refresh_canceled()

    def start(self, event: TaskEvent) -> LiveStatus:
        """A worker starts the task: record it and make ``current()`` return its handle.

        Raises :class:`~taskstatus.TaskCanceledException` when the status was canceled: the
        adapter must then skip the task body (and call :meth:`end` with that exception).
        """
        self._prerun(event=event)
        live = LiveStatus(self._live_calls, event, interval=self._settings.progress_interval)
        live.token = activate(live)
        self._heartbeat.add(event.task_id)
        if self._settings.progress_interval:  # else every progress call writes at once
            self._heartbeat.watch(live)
        return live

    def release(self, live: LiveStatus) -> None:
        """The run stopped without an outcome (its message goes back to the queue): write
        its progress and clear ``current()``; the next delivery counts a new attempt."""
        try:
            self._stop_run(live, succeeded=False)
        finally:
            self._postrun(event=live.started_with)

    def _stop_run(self, live: LiveStatus, *, succeeded: bool) -> None:
        """Write the run's pending progress and clear ``current()``. ``succeeded``: the
        success is written next, which completes every step anyway."""
        try:
            live.flush(final=True, succeeding=succeeded)
        finally:
            self._heartbeat.unwatch(live)
            self._heartbeat.discard(live.task_id)
            if live.token is not None:
                deactivate(live.token)
                live.token = None

    def end(
        self,
        task: LiveStatus | TaskEvent,
        *,
        exception: BaseException | None = None,
        retrying: bool = False,
        message: str | None = None,
        traceback: str | None = None,
    ) -> None:
        """The run ended: succeeded (no exception), canceled (TaskCanceledException), will be
        retried (``retrying``, with or without an exception) or failed, with ``message`` as
        the user-facing text if given; pending progress is written first. ``task`` is the
        live handle from :meth:`start`, or an event where the run could not report itself
        (a worker that died, a job stopped from outside)."""
        if not isinstance(task, LiveStatus):
            self._report_end(task, exception, retrying, message, traceback)
            return
        try:
            self._stop_run(task, succeeded=exception is None and not retrying)
            self._report_end(task._event(), exception, retrying, message, traceback)
        finally:
            self._postrun(event=task.started_with)

    def _report_end(
        self,
        event: TaskEvent,
        exception: BaseException | None,
        retrying: bool,
        message: str | None,
        traceback: str | None,
    ) -> None:
        if exception is None and not retrying:
            self._succeed(event=event)
            return
        if isinstance(exception, TaskCanceledException):
            self._hook.taskstatus_cancel(event=dataclasses.replace(event, exception=exception))
            return
        if traceback is None and exception is not None:
            traceback = "".join(traceback_module.format_exception(exception))
        hook = self._hook.taskstatus_retry if retrying else self._hook.taskstatus_fail
        hook(
            event=dataclasses.replace(
                event, exception=exception, message=message, traceback=traceback
            )
        )

    # -- worker processes --------------------------------------------------------------------
    def worker_started(self) -> None:
        """Call in each worker process as it starts (before it forks children that run
        tasks): :meth:`batch_writes`, and reap the tasks of lost workers from now on, idle or
        not (see :mod:`taskstatus.heartbeat`). A child forked from such a process only
        stamps the tasks it runs and leaves reaping to its parent."""
        self.batch_writes()
        self._heartbeat.start_reaping()

    def batch_writes(self) -> None:
        """Call in worker processes: from now on task starts and successes are written in
        batches every ``write_interval`` seconds (see :mod:`taskstatus.writebehind`). The
        adapter must call :meth:`drain` when the process shuts down."""
        self._recorder.batch_writes(self._settings.write_interval, self._settings.max_age)

    @property
    def writes_batched(self) -> bool:
        """Whether :meth:`batch_writes` took effect here: starts and successes are queued."""
        return self._recorder.writer is not None

    @overload
    def after_write(self, callback: Callable[[], object]) -> bool: ...
    @overload
    def after_write(self, callback: Callable[[list[T]], object], item: T) -> bool: ...
    def after_write(self, callback: Callable[..., object], item: object = _ALONE) -> bool:
        """Call ``callback`` with ``item`` on the writer thread once the outcomes queued so
        far are stored (how an adapter acknowledges a message whose success is queued): the
        writer thread writes at once, for every acknowledgement waiting, and gives a
        callback all its items of that write in one call, in order (acknowledgements sent
        together). Without ``item``, ``callback`` is called alone, without arguments. False,
        and nothing is called, when writes are not batched."""
        writer = self._recorder.writer
        if writer is None:
            return False
        if item is _ALONE:
            writer.after_write(call_each, callback)
        else:
            writer.after_write(callback, item)
        return True

    def run_waiting(self) -> None:
        """Write what is queued and call the callbacks given to :meth:`after_write`, now, on
        this thread (a worker stopping)."""
        if self._recorder.writer is not None:
            self._recorder.writer.run_waiting()

    def drain(self, *, ended_only: bool = False) -> None:
        """Write the task starts and successes this process has queued. ``ended_only``
        writes only those of tasks that ended: what must be stored before the queue
        acknowledges their messages."""
        self._recorder.drain(ended_only=ended_only)

    # -- a run handed to a forked child (see taskstatus.handoff) ------------------------------
    def prepare_for_fork(self) -> None:
        """Get this process ready to fork children that run tasks (a work horse per job):
        the first call checks the schema and compiles the hot path's statements once, so
        every child starts warm; each call refreshes the ids of tasks canceled before they
        started, which a child inherits and refuses without a query."""
        self._recorder.prepare_for_fork()

    def hand_off(self, event: TaskEvent) -> HandOff:
        """In a worker, just before it forks a child to run the task of ``event``: nothing is
        written yet; this process vouches for the task's heartbeat, and writes its start if
        the child still runs after ``write_interval``. Call :meth:`finish_hand_off` once the
        child has ended."""
        self.prepare_for_fork()
        recorder = self._recorder
        writer = recorder.writer
        handoff = HandOff(event, recorder.clock(), deferred=writer is not None)
        self._heartbeat.add(event.task_id)
        if writer is not None:
            handoff.start_call = writer.call_later(
                writer.interval,
                lambda: recorder.start_unless_changed(handoff.event, handoff.since),
            )
        return handoff

    def take_over(self, handoff: HandOff) -> LiveStatus:
        """In the child: :meth:`start` the task handed off, its start written only before
        this process's first other write. Raises TaskCanceledException as :meth:`start`."""
        if not handoff.deferred:
            return self.start(handoff.event)
        event = handoff.event
        writer = self._recorder.writer
        # As the worker read them just before the fork (see prepare_for_fork): no query here.
        if writer is not None and writer.canceled_unstarted(event.task_id, refresh=False):
            raise TaskCanceledException(f"task {event.task_id} was canceled before it started")
        self._recorder.defer_start(event, handoff.since)
        self._prerun(event=event)
        # No heartbeat here: the worker keeps it (see hand_off), unless it dies. The thread
        # that checks for that also writes pending progress, from the first progress call.
        self._heartbeat.adopt_if_orphaned(handoff.parent, event.task_id)
        live = LiveStatus(
            self._live_calls, event, interval=self._settings.progress_interval, watched=False
        )
        live.token = activate(live)
        return live

    def hand_back(self, handoff: HandOff, live: LiveStatus) -> None:
        """In the child, once the task succeeded: write its pending progress and leave the
        success to the parent, which writes it in its next batch (with the start, as one
        write, if that was never written). If the parent died, the child writes the success
        itself, before it returns."""
        if not handoff.deferred:
            self.end(live)
            return
        ended = self._recorder.clock()
        try:
            self._stop_run(live, succeeded=True)
            if handoff.orphaned():
                # Its start (if still deferred) first, unless the worker wrote it before it
                # died.
                self._succeed(event=dataclasses.replace(handoff.event, at=ended))
                self._store(f"task {handoff.task_id}", ended_only=False)
                return
            unstarted = self._recorder.withdraw_start()
            handoff.report(HandOff.SUCCEEDED_UNSTARTED if unstarted else HandOff.SUCCEEDED, ended)
        finally:
            self._postrun(event=live.started_with)

    def finish_hand_off(self, handoff: HandOff) -> None:
        """In the worker, once the child has ended: write the success it handed back. Any
        other outcome the child wrote itself, or the adapter ends the task with :meth:`end`
        (a child that died)."""
        event = handoff.event
        self._heartbeat.discard(event.task_id)
        writer = self._recorder.writer
        # Taken back unless it ran: the start is then this process's to write.
        start_pending = (
            writer is not None
            and handoff.start_call is not None
            and writer.cancel_call(handoff.start_call)
        )
        outcome = handoff.outcome()
        if outcome == HandOff.NOTHING:
            return
        self._write_success(
            handoff, start_pending=outcome == HandOff.SUCCEEDED_UNSTARTED and start_pending
        )

    def _write_success(self, handoff: HandOff, *, start_pending: bool) -> None:
        """Queue the success a child reported (and the start nobody wrote, as one write)."""
        event = handoff.event
        writer = self._recorder.writer
        if start_pending and writer is not None:
            # Checked for a cancel in the child; a later cancel wins in the write itself,
            # which the success joins into one.
            writer.start(event, handoff.since, check_canceled=False)
        self._succeed(event=dataclasses.replace(event, at=handoff.ended()))
