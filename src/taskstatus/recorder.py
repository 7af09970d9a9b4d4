"""The recorder: the default plugin that turns lifecycle events into state-machine transitions.

It asks the model which transition an event means and which container rules follow, and the
store to write them; it fires ``taskstatus_stopped`` exactly once per status, for the write
that moved it into a terminal state (the store's conditional UPDATE tells which one did).

In a worker process whose adapter turned on :meth:`Recorder.batch_writes`, task starts and
successes go through a :class:`~taskstatus.writebehind.WriteBehind` and are written in
batches; every other event first writes out what is queued.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
import uuid as uuid_module
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING
from uuid import UUID

from . import messages, models
from .events import TaskEvent
from .exceptions import StoreError, TaskCanceledException
from .hookspecs import hookimpl
from .models import MAX_TEXT, Artifact, State, TaskStatus, check_key, clean_text
from .store import AttemptStore, EndedBatch, TaskKey
from .writebehind import BATCHED_RUN, BATCHED_START, BATCHED_SUCCESS, WriteBehind

if TYPE_CHECKING:
    import pluggy

    from .store import Store

__all__ = ["Recorder"]

log = logging.getLogger(__name__)

#: Name of the artifact that carries a failure's message.
ERROR_ARTIFACT = "Error"
GROUP_FAILED = "A task in this group failed."


#: The events published inside an open :func:`collecting` block, by recorder and task id (of
#: a task published twice, the first): written together when the block's owner calls
#: :meth:`Recorder.publish_many`.
_collected: contextvars.ContextVar[dict[Recorder, dict[str, TaskEvent]] | None] = (
    contextvars.ContextVar("taskstatus_collected", default=None)
)


@contextlib.contextmanager
def collecting() -> Iterator[dict[Recorder, dict[str, TaskEvent]]]:
    """Hold the tasks published in this block (on this thread or task) instead of recording
    each at once; the caller writes what the block yields, by recorder."""
    collected: dict[Recorder, dict[str, TaskEvent]] = {}
    token = _collected.set(collected)
    try:
        yield collected
    finally:
        _collected.reset(token)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Recorder:
    """Lifecycle hooks -> transitions, for one store."""

    def __init__(
        self,
        store: Store,
        pm: pluggy.PluginManager,
        *,
        bind: Callable[[TaskStatus], TaskStatus] = lambda status: status,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.pm = pm
        #: Makes the status handed to ``taskstatus_stopped`` a full API object.
        self.bind = bind
        self.clock = clock
        self._keys: OrderedDict[str, TaskKey] = OrderedDict()
        self._keys_lock = threading.Lock()
        #: Batches task starts and successes (None: each is written at once).
        self.writer: WriteBehind | None = None
        #: See defer_start.
        self._deferred_start: tuple[TaskEvent, datetime] | None = None
        #: Set once prepare_for_fork() has warmed the store up.
        self._warm = False

    def close(self) -> None:
        """Stop the writer thread (what it holds is written first)."""
        if self.writer is not None:
            self.writer.stop()
        self._warm = False

    def prepare_for_fork(self) -> None:
        """Warm up what a forked child inherits: the first call opens the store and runs the
        hot path once with nothing to change, so the schema is checked and the statements
        compiled; each call refreshes the ids of tasks canceled before they started (if not
        recently read), so a child refuses such a task without a query."""
        self.refresh_canceled()
        if self._warm:
            return
        self._warm = True
        self.store.open()
        now = self.clock()
        nobody = uuid_module.uuid4()
        self.store.get_by_task_id(f"taskstatus:warm-up:{nobody}")
        for transition in (models.START, models.SUCCEED, models.RUN):
            self.store.transition(nobody, transition, now)
            self.store.transition_tasks([f"taskstatus:warm-up:{nobody}"], transition, now)
        self.store.add_steps(nobody, 1, 0, now)

    def refresh_canceled(self) -> None:
        """Read the ids of tasks canceled before they started, unless read recently (when
        writes are batched; else each start reads its own status)."""
        if self.writer is not None:
            self.writer.refresh_canceled()

    def batch_writes(self, interval: float, cancel_horizon: timedelta) -> None:
        """From now on, queue task starts and successes and write them every ``interval``
        seconds; ``cancel_horizon`` bounds how old a cancel a worker looks for."""
        if self.writer is None and interval > 0:
            self.writer = WriteBehind(
                interval,
                self._write_batch,
                self.store.canceled_unstarted,
                self.clock,
                cancel_horizon,
            )

    def drain(self, *, ended_only: bool = False) -> None:
        """Write the queued starts and successes now (before any other write or a read);
        ``ended_only``: only those of tasks that ended."""
        if self._deferred_start is not None and not ended_only:
            event, since = self._deferred_start
            self.start_unless_changed(event, since)
            self._deferred_start = None
        if self.writer is not None:
            self.writer.drain(ended_only=ended_only)

    # -- a run handed to a forked child (see taskstatus.handoff) ------------------------------
    def defer_start(self, event: TaskEvent, since: datetime) -> None:
        """In a child forked to run one task: write its start only before this process's
        next write, and only if its status has not changed since ``since`` (the parent
        process may have written it meanwhile)."""
        self._deferred_start = (event, since)

    def withdraw_start(self) -> bool:
        """True if the deferred start was never written (it now never will be)."""
        deferred, self._deferred_start = self._deferred_start, None
        return deferred is not None

    def start_unless_changed(self, event: TaskEvent, since: datetime) -> None:
        """Start the task at ``since`` unless its status changed since then: of two
        processes that may both write one start, only the first does (the start itself is
        a change at ``since``)."""
        started = self.store.transition_tasks(
            [event.task_id], models.START, since, unchanged_since=since
        )
        if started:
            key = self._remember(started[0])
            if key.parent_uuid is not None:
                self._start_ancestors(key, since)
        elif self._key(event.task_id) is None:
            self._prerun(event, since)  # published where no hook ran: record it now

    # -- lookups -------------------------------------------------------------------------------
    def _remember(self, key: TaskKey) -> TaskKey:
        with self._keys_lock:
            self._keys[key.task_id] = key
            self._keys.move_to_end(key.task_id)
            if len(self._keys) > 10_000:
                self._keys.popitem(last=False)
        return key

    def key(self, task_id: str) -> TaskKey | None:
        """Identity of the status of ``task_id`` (cached: it never changes)."""
        return self._key(task_id)

    def _cached_key(self, task_id: str) -> TaskKey | None:
        with self._keys_lock:
            return self._keys.get(task_id)

    def _key(self, task_id: str) -> TaskKey | None:
        key = self._cached_key(task_id)
        if key is not None:
            return key
        status = self.store.get_by_task_id(task_id)
        return self._remember(_key_of(status)) if status is not None else None

    # -- lost workers (see taskstatus.heartbeat) ------------------------------------------------
    def beat(self, task_ids: Sequence[str]) -> None:
        """Write what this process queued (the starts of these tasks, the outcomes of others
        that ended: an outcome still held here is never taken for lost), then stamp
        ``heartbeat_at`` on these tasks of this process."""
        self.drain()
        if task_ids:
            keys = (self.key(task_id) for task_id in task_ids)
            self.store.beat([key.uuid for key in keys if key is not None], utcnow())

    def reap_lost(self, before: datetime, limit: int = 500) -> int:
        """End the tasks whose worker has not stamped them since ``before`` (see
        :meth:`~taskstatus.store.Store.lost`): Retrying when their queue delivers them
        again, else Failed; returns how many."""
        self.drain()
        lost = self.store.lost(before, limit)
        for status in lost:
            event = TaskEvent(
                task_id=status.task_id,
                queue=status.queue,
                task_class=status.task_class,
                message=messages.WORKER_LOST,
            )
            if status.redeliver_on_loss:
                log.warning("task %s: worker lost; the queue will deliver it again", status.task_id)
                self.pm.hook.taskstatus_retry(event=event)
            else:
                log.warning("task %s: worker lost; marking it failed", status.task_id)
                self.pm.hook.taskstatus_fail(event=event)
        return len(lost)

    # -- lifecycle hooks -------------------------------------------------------------------------
    @hookimpl
    def taskstatus_publish(self, event: TaskEvent) -> None:
        collected = _collected.get()
        if collected is not None:
            _check_publish(event)  # bad input raises where it was given
            collected.setdefault(self, {}).setdefault(event.task_id, event)
            return
        # What this process recorded comes first: a task published from a task (the next step
        # of a chain) may run, and end its container, before the next batch.
        self.drain()
        self._create(event)

    def publish_many(self, events: Sequence[TaskEvent]) -> None:
        """Record the tasks of ``events`` (a container before its children; each checked
        when it was collected) with one write; should one of them exist already (published
        again), one by one, the first record of each standing."""
        self.drain()
        now = self.clock()  # published together: one time, ordered by their rows
        new: dict[str, TaskStatus] = {}
        for event in events:
            if event.task_id in new:
                continue
            parent = None
            if event.parent_task_id:
                in_batch = new.get(event.parent_task_id)
                parent = _key_of(in_batch) if in_batch is not None else self._parent(event)
            new[event.task_id] = self._new_status(event, parent, event.total_steps, now)
        if self.store.insert_many(list(new.values())):
            for status in new.values():
                self._remember(_key_of(status))
            return
        for event in events:
            self._create(event)

    def _parent(self, event: TaskEvent) -> TaskKey | None:
        """The key of the container ``event`` names, if it is known."""
        assert event.parent_task_id is not None
        parent = self._key(event.parent_task_id)
        if parent is None:
            log.warning(
                "container %s of task %s is unknown; recording the task without it",
                event.parent_task_id,
                event.task_id,
            )
        return parent

    def _create(self, event: TaskEvent) -> TaskKey:
        parent = self._parent(event) if event.parent_task_id else None
        status = self._new_status(event, parent, _check_publish(event), self.clock())
        if self.store.insert(status):
            return self._remember(_key_of(status))
        # Re-published (a retry, a redelivery): the first record stands.
        key = self._key(event.task_id)
        assert key is not None
        return key

    def _new_status(
        self, event: TaskEvent, parent: TaskKey | None, total: int, now: datetime
    ) -> TaskStatus:
        """The Pending status ``event`` publishes (``total``: its checked total steps)."""
        return TaskStatus(
            uuid=uuid_module.uuid4(),
            task_id=event.task_id,
            queue=event.queue,
            task_class=clean_text(event.task_class, MAX_TEXT),
            name=clean_text(event.name or event.task_class or event.task_id, MAX_TEXT),
            user_id=event.user_id,
            parent_uuid=parent.uuid if parent else None,
            is_container=event.is_container,
            sealed=event.sealed,
            total_steps=total,
            planned_steps=total,
            redeliver_on_loss=event.redeliver_on_loss,
            sequential=event.sequential,
            created=now,
            modified=now,
        )

    @hookimpl
    def taskstatus_prerun(self, event: TaskEvent) -> None:
        if self._deferred_start is not None and self._deferred_start[0].task_id == event.task_id:
            return  # written before this process's next write, if at all
        if self.writer is not None:
            self.writer.start(event, event.at or self.clock())  # _when(), a call fewer
        else:
            self._prerun(event, self._when(event))

    def _when(self, event: TaskEvent) -> datetime:
        """When the event happened."""
        return event.at or self.clock()

    def _prerun(self, event: TaskEvent, now: datetime) -> None:
        key = self._cached_key(event.task_id)
        if key is None:
            # Published elsewhere: start it by task id, one statement that also returns its key.
            started = self.store.transition_tasks([event.task_id], models.START, now)
            if started:
                key = self._remember(started[0])
                if key.parent_uuid is not None:
                    self._start_ancestors(key, now)
                return
            # Published where no hook ran (eager mode, a producer without install()), or
            # not startable: find out which.
            key = self._key(event.task_id) or self._create(event)
        if self.store.transition(key.uuid, models.START, now):
            if key.parent_uuid is not None:
                self._start_ancestors(key, now)
            return
        current = self.store.get(key.uuid)
        if current is not None and current.state is State.CANCELED and not key.is_container:
            raise TaskCanceledException(f"task {event.task_id} was canceled before it started")

    def _start_ancestors(self, key: TaskKey, now: datetime) -> None:
        parent_uuid = key.parent_uuid
        while parent_uuid is not None:
            if not self.store.transition(parent_uuid, models.START_CONTAINER, now):
                return  # already running: its own ancestors were started with it
            parent = self.store.get(parent_uuid)
            parent_uuid = parent.parent_uuid if parent else None

    @hookimpl
    def taskstatus_progress(self, event: TaskEvent) -> None:
        self.drain()
        key = self._key(event.task_id)
        if key is None:
            return
        now = self.clock()
        alive = True
        if event.completed_delta or event.total_delta:
            alive = self.store.add_steps(key.uuid, event.completed_delta, event.total_delta, now)
        if event.name is not None:
            chain = [key.uuid, *(a.uuid for a in self.store.ancestors(key.uuid))]
            self.store.set_name(chain, clean_text(event.name, MAX_TEXT), now)
        if event.stage is not None:
            stage = clean_text(event.stage, MAX_TEXT)
            alive = self.store.set_stage(self._stage_chain(key), stage, now) > 0
        elif not (event.completed_delta or event.total_delta):
            current = self.store.get(key.uuid)
            alive = current is not None and not current.is_terminal
        if not alive:
            current = self.store.get(key.uuid)
            if current is None or current.state is State.CANCELED:
                raise TaskCanceledException(f"task {event.task_id} was canceled")

    def _stage_chain(self, key: TaskKey) -> list[UUID]:
        """The status and its ancestors up to (not including) the nearest container that is
        not sequential (a group)."""
        chain = [key.uuid]
        for ancestor in self.store.ancestors(key.uuid):
            if not models.shares_stage(ancestor):
                break
            chain.append(ancestor.uuid)
        return chain

    @hookimpl
    def taskstatus_retry(self, event: TaskEvent) -> None:
        self.drain()
        key = self._key(event.task_id)
        if key is None or key.is_container:
            return
        now, traceback = self._when(event), _traceback(event)
        if isinstance(self.store, AttemptStore):
            self.store.end_attempt(
                key.uuid, models.RETRY, now, message=_message(event), traceback=traceback
            )
        else:  # a store without a history: the retry is only counted
            self.store.transition(key.uuid, models.RETRY, now, traceback=traceback)

    @hookimpl
    def taskstatus_fail(self, event: TaskEvent) -> None:
        self.drain()
        key = self._key(event.task_id)
        if key is None:
            return
        message = _message(event) or "The task failed."
        self._fail(key.uuid, key.parent_uuid, message, _traceback(event), self._when(event))

    def _fail(
        self,
        uuid: UUID,
        parent_uuid: UUID | None,
        message: str,
        traceback: str | None,
        now: datetime,
    ) -> None:
        error = _error(uuid, message, now)
        if not self.store.transition(
            uuid, models.FAIL, now, traceback=traceback or None, artifact=error
        ):
            return
        self._stopped(uuid)
        if parent_uuid is not None:
            self._after_child_ended(parent_uuid, State.FAILED, now, message)

    def unsent(self, task_ids: Sequence[str], message: str, traceback: str | None) -> None:
        """Fail those of these statuses still Pending: their messages were never sent. All
        of them first, then their other containers as for a failed child, so that none of
        them is canceled as a waiting sibling of another."""
        self.drain()
        now = self.clock()
        traceback = clean_text(traceback) if traceback else None
        failed: list[TaskKey] = []
        for task_id in dict.fromkeys(task_ids):
            key = self._key(task_id)
            if key is None:
                continue
            error = _error(key.uuid, message, now)
            if self.store.transition(
                key.uuid, models.UNSENT, now, traceback=traceback, artifact=error
            ):
                failed.append(key)
                self._stopped(key.uuid)
        ended = {key.uuid for key in failed}
        for parent_uuid in dict.fromkeys(key.parent_uuid for key in failed):
            if parent_uuid is not None and parent_uuid not in ended:
                self._after_child_ended(parent_uuid, State.FAILED, now, message)

    @hookimpl
    def taskstatus_succeed(self, event: TaskEvent) -> None:
        if self.writer is not None:
            self.writer.succeed(event, event.at or self.clock())  # _when(), a call fewer
        else:
            self._succeed(event, self._when(event))

    def _succeed(self, event: TaskEvent, now: datetime) -> None:
        key = self._key(event.task_id)
        if key is None:
            return
        if self.store.transition(key.uuid, models.SUCCEED, now):
            self._succeeded(key, now)

    def _succeeded(self, key: TaskKey, now: datetime) -> None:
        self._stopped(key.uuid)
        if key.parent_uuid is not None:
            self._after_child_ended(key.parent_uuid, State.SUCCEEDED, now)

    def _write_batch(
        self,
        kind: str,
        events: Sequence[TaskEvent],
        at: Sequence[datetime],
        started: Sequence[datetime] | None,
    ) -> None:
        """Write queued starts, successes or runs (both at once), each at the time it
        happened (``started``: when each run started): one batched transition, then what
        follows from it."""
        transition = {
            BATCHED_START: models.START,
            BATCHED_SUCCESS: models.SUCCEED,
            BATCHED_RUN: models.RUN,
        }[kind]
        task_ids = [e.task_id for e in events]
        when = dict(zip(task_ids, at, strict=True))
        began = when if started is None else dict(zip(task_ids, started, strict=True))
        if kind == BATCHED_START or self._stopped_heard():
            # The keys of all: a start's are cached for its progress, a listener gets each end.
            changed = self.store.transition_tasks(task_ids, transition, at, started=started)
            unchanged = EndedBatch.of(task_ids, changed).unchanged
        else:
            batch = self.store.end_tasks(task_ids, transition, at, started=started)
            changed, unchanged = batch.contained, batch.unchanged  # the others need no more
        if kind == BATCHED_START:
            for key in changed:
                self._remember(key)  # the running task's progress and artifacts need it
        for key in changed:
            if kind != BATCHED_SUCCESS and key.parent_uuid is not None:
                self._start_ancestors(key, began[key.task_id])
            if kind != BATCHED_START:
                self._succeeded(key, when[key.task_id])
        if kind == BATCHED_SUCCESS:
            return  # the others had ended already, as they would have at once
        left = set(unchanged)
        for event in events:
            if event.task_id not in left:
                continue
            # Never published here (eager mode), or canceled meanwhile: the task's next
            # progress call notices the cancel.
            with contextlib.suppress(TaskCanceledException):
                self._prerun(event, began[event.task_id])
                if kind == BATCHED_RUN:
                    self._succeed(event, when[event.task_id])

    @hookimpl
    def taskstatus_cancel(self, event: TaskEvent) -> None:
        self.drain()
        key = self._key(event.task_id)
        if key is None:
            return
        now = self._when(event)
        if not self.store.transition(key.uuid, models.CANCEL, now):
            return
        self._stopped(key.uuid)
        if key.is_container:
            self._cancel_children(key.uuid, terminate=event.terminate)
        if key.parent_uuid is not None:
            self._after_child_ended(key.parent_uuid, State.CANCELED, now)

    def _cancel_children(self, uuid: UUID, *, terminate: bool) -> None:
        for child in self.store.children(uuid):
            if not child.is_terminal:
                # Through the hook, so queue adapters revoke each child's message too.
                self.pm.hook.taskstatus_cancel(event=_event_for(child, terminate=terminate))

    # -- containers ------------------------------------------------------------------------------
    def _after_child_ended(
        self,
        parent_uuid: UUID,
        outcome: State,
        now: datetime,
        failed_message: str | None = None,
    ) -> None:
        """A child ended at ``now``: so may its container."""
        parent = self.store.get(parent_uuid)
        if parent is None:
            return
        if outcome is State.FAILED:
            # django-user-tasks' rule: a failure fails the container at once, with the same message.
            self._fail(parent_uuid, parent.parent_uuid, failed_message or GROUP_FAILED, None, now)
        if outcome is not State.SUCCEEDED and models.cancels_waiting_siblings(parent):
            for sibling in self.store.children(parent_uuid):
                if sibling.state is State.PENDING:
                    self.pm.hook.taskstatus_cancel(event=_event_for(sibling))
        self.settle(parent_uuid, now)

    def settle(self, uuid: UUID, now: datetime | None = None) -> None:
        """End a sealed container whose children have all ended (at ``now``: when the last
        one did), then its own container."""
        container = self.store.get(uuid)
        if container is None or container.is_terminal or not container.sealed:
            return
        outcome = models.container_outcome(self.store.child_states(uuid))
        if outcome is None:
            return
        now = now or self.clock()
        if outcome is State.FAILED:
            self._fail(uuid, container.parent_uuid, self._child_error(uuid), None, now)
            return
        if self.store.transition(uuid, models.transition_to(outcome), now):
            self._stopped(uuid)
            if container.parent_uuid is not None:
                self._after_child_ended(container.parent_uuid, outcome, now)

    def _child_error(self, uuid: UUID) -> str:
        """The Error text of a failed child, for its container."""
        failed = [c.uuid for c in self.store.children(uuid) if c.state is State.FAILED]
        for artifact in self.store.artifacts(failed):
            if artifact.name == ERROR_ARTIFACT and artifact.text:
                return artifact.text
        return GROUP_FAILED

    def seal(self, task_id: str) -> None:
        """No more children will join this container: it may end once they have."""
        self.drain()
        key = self._key(task_id)
        if key is not None:
            self.store.seal(key.uuid, self.clock())
            self.settle(key.uuid)

    def _stopped_heard(self) -> bool:
        return bool(self.pm.hook.taskstatus_stopped.get_hookimpls())

    def _stopped(self, uuid: UUID) -> None:
        """Fire ``taskstatus_stopped`` for a status that just reached a terminal state."""
        if not self._stopped_heard():
            return  # nobody listens: spare the read
        status = self.store.get(uuid)
        if status is None:
            return
        try:
            self.pm.hook.taskstatus_stopped(status=self.bind(status))
        except Exception:
            # A notification plugin must not undo or block the state change.
            log.exception("a taskstatus_stopped hook failed for status %s", uuid)


def _error(uuid: UUID, message: str, now: datetime) -> Artifact:
    """The ``Error`` artifact of a status that fails with ``message``."""
    return Artifact(
        uuid=uuid_module.uuid4(),
        status_uuid=uuid,
        name=ERROR_ARTIFACT,
        text=message,
        created=now,
        modified=now,
    )


def _check_publish(event: TaskEvent) -> int:
    """Refuse what cannot be recorded of a published task; returns its total steps."""
    total = models.check_steps(event.total_steps, "total_steps")
    check_key(event.task_id, "task_id")
    if event.user_id is not None:
        check_key(event.user_id, "user_id")
    return total


def _key_of(status: TaskStatus) -> TaskKey:
    return TaskKey(status.task_id, status.uuid, status.parent_uuid, status.is_container)


def _message(event: TaskEvent) -> str | None:
    """What went wrong, for the owner: the ``Error`` artifact's text, an attempt's message."""
    message = event.message or _describe(event.exception)
    return None if message is None else clean_text(message)


def _traceback(event: TaskEvent) -> str | None:
    return clean_text(event.traceback) if event.traceback else None


#: The owner's text of a failure inside a database: its message would show SQL, parameters
#: and the server's words, which are for the operator (the traceback, the worker's log).
DATABASE_FAILED = "a database operation failed (details in the worker's log)"


def _describe(exc: BaseException | None) -> str | None:
    if exc is None:
        return None
    if isinstance(exc, StoreError) or _is_statement_error(exc):
        return f"{type(exc).__name__}: {DATABASE_FAILED}"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _is_statement_error(exc: BaseException) -> bool:
    """A SQLAlchemy statement error (its text holds the statement and parameters), or a
    driver's error (PEP 249's hierarchy), told apart without importing either."""
    if hasattr(exc, "statement") and hasattr(exc, "params"):
        return True
    return any(
        cls.__name__ == "DatabaseError" and cls.__module__ != "builtins"
        for cls in type(exc).__mro__
    )


def _event_for(status: TaskStatus, *, terminate: bool = False) -> TaskEvent:
    return TaskEvent(
        task_id=status.task_id,
        queue=status.queue,
        task_class=status.task_class,
        name=status.name,
        user_id=status.user_id,
        is_container=status.is_container,
        terminate=terminate,
    )
