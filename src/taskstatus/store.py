"""The Store protocol: what persistence a tracker needs, and nothing about queues.

A store executes the model's rules; it never decides them. Each write that changes a status
is one conditional statement so that concurrent workers cannot lose an update.
"""

from __future__ import annotations

import enum
from abc import abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable
from uuid import UUID

from .changes import Change, ChangeSignal, Position
from .models import Artifact, Attempt, State, TaskStatus, Transition

__all__ = [
    "ANY",
    "AttemptStore",
    "Change",
    "ChangeSignal",
    "EndedBatch",
    "Position",
    "StatusQuery",
    "Store",
    "StoreCore",
    "Summary",
    "TaskKey",
    "Times",
    "per_task",
]

#: One time for every task of a batch, or each task's own, in the order of its task ids.
Times = datetime | Sequence[datetime]


class _Any(enum.Enum):
    ANY = "ANY"

    def __repr__(self) -> str:
        return "ANY"


#: Filter value meaning "do not filter on this field" (``parent=None`` means top level).
ANY = _Any.ANY


@dataclass(frozen=True)
class StatusQuery:
    """Filters of :meth:`Store.query`; results are newest first: by ``created``, then by
    the order the store inserted them in."""

    user_ids: Sequence[str] | None = None
    state: State | None = None
    search: str | None = None
    parent: UUID | _Any | None = ANY
    created_after: datetime | None = None
    created_before: datetime | None = None
    limit: int | None = 50
    offset: int = 0
    #: Any of these states (with ``state`` too: the states of both).
    states: frozenset[State] | None = None
    queue: str | None = None
    task_class: str | None = None
    #: Keyset pagination: only statuses after this one (``created``, ``uuid``) in the
    #: newest-first order, so that a page is stable while new statuses arrive. Should that
    #: status have been deleted meanwhile, its siblings of the very same ``created`` are
    #: skipped with it.
    after: tuple[datetime, UUID] | None = None

    def wanted_states(self) -> frozenset[State] | None:
        """The states a status may be in to match, None for any."""
        if self.state is None:
            return self.states
        return frozenset({self.state, *(self.states or ())})

    def matches(self, s: TaskStatus) -> bool:
        """Whether ``s`` passes the filters (all but the keyset ``after``): the in-memory
        store's query, and a filtered stream of changes."""
        states = self.wanted_states()
        return (
            (self.user_ids is None or s.user_id in self.user_ids)
            and (states is None or s.state in states)
            and (self.queue is None or s.queue == self.queue)
            and (self.task_class is None or s.task_class == self.task_class)
            and (not self.search or self.search.lower() in s.name.lower())
            and (self.parent is ANY or s.parent_uuid == self.parent)
            and (
                self.created_after is None
                or (s.created is not None and s.created >= self.created_after)
            )
            and (
                self.created_before is None
                or (s.created is not None and s.created < self.created_before)
            )
        )


@dataclass(frozen=True)
class TaskKey:
    """What never changes about a status once created: safe to cache by task id."""

    task_id: str
    uuid: UUID
    parent_uuid: UUID | None
    is_container: bool


@dataclass(frozen=True)
class EndedBatch:
    """What :meth:`Store.end_tasks` reports: only what its caller must follow up on."""

    #: Task ids whose status did not change: missing, or in a state the transition does not
    #: leave.
    unchanged: list[str]
    #: Keys of the statuses that ended and belong to a container (which may end with them).
    contained: list[TaskKey]

    @classmethod
    def of(cls, task_ids: Sequence[str], changed: Sequence[TaskKey]) -> EndedBatch:
        """The report for a batch whose changed keys are known (from ``transition_tasks``)."""
        done = {key.task_id for key in changed}
        return cls(
            unchanged=[task_id for task_id in dict.fromkeys(task_ids) if task_id not in done],
            contained=[key for key in changed if key.parent_uuid is not None],
        )


@dataclass(frozen=True)
class Summary:
    """The store at a glance, for monitoring (``taskstatus serve``'s ``/metrics``): nothing
    about any owner."""

    #: Statuses by state, containers included; a state without any is left out.
    counts: Mapping[State, int]
    #: When the current run of the task (not container) In Progress longest started; None
    #: when no task is In Progress.
    oldest_in_progress: datetime | None


def per_task(task_ids: Sequence[str], times: Times) -> dict[str, datetime]:
    """Each task id's own time, from :data:`Times` (of a repeated id, the last)."""
    if isinstance(times, datetime):
        return dict.fromkeys(task_ids, times)
    if len(times) != len(task_ids):
        raise ValueError(f"{len(times)} times for {len(task_ids)} task ids")
    return dict(zip(task_ids, times, strict=True))


@runtime_checkable
class Store(Protocol):
    """Persistence of statuses and artifacts. Implementations must be safe to share between
    threads and must not carry open connections across ``fork()``. A new store need only write
    the :class:`StoreCore` primitives, in a subclass of
    :class:`~taskstatus.backends.base.BaseStore`."""

    url: str

    def open(self) -> None:
        """Connect; create the schema on an empty database; refuse an outdated one."""

    def close(self) -> None:
        """Release connections."""

    # -- writes ------------------------------------------------------------------------------
    def insert(self, status: TaskStatus) -> bool:
        """Insert unless a status with this task_id exists; True when inserted."""

    def insert_many(self, statuses: Sequence[TaskStatus]) -> bool:
        """Insert all of ``statuses`` (each parent before its children) in one write, or none
        when a status with one of their task ids exists: True when inserted. What publishes
        many tasks at once (a group, ``taskstatus.batch()``) records them with it."""

    def transition(
        self,
        uuid: UUID,
        transition: Transition,
        now: datetime,
        *,
        traceback: str | None = None,
        artifact: Artifact | None = None,
    ) -> bool:
        """Apply ``transition`` if the current state allows it (one conditional UPDATE). When
        it applies, keep ``traceback`` and add ``artifact`` in the same transaction: nobody
        sees a failure without its ``Error`` artifact, or a retry without its traceback."""

    def transition_tasks(
        self,
        task_ids: Sequence[str],
        transition: Transition,
        now: Times,
        *,
        unchanged_since: datetime | None = None,
        started: Times | None = None,
    ) -> list[TaskKey]:
        """Apply ``transition`` to the statuses of ``task_ids`` that allow it (one conditional
        write per status, as :meth:`transition`, however batched); return the keys of those
        that changed. Statuses that are missing or in another state are left out, and with
        ``unchanged_since`` also those modified at or after that time.

        ``now`` is when each task's event happened (a worker writes its events in batches,
        late): it stamps ``modified`` and the times the transition sets. ``started``: the
        ``started_at`` of a transition that both starts and ends a task (default ``now``)."""

    def end_tasks(
        self,
        task_ids: Sequence[str],
        transition: Transition,
        now: Times,
        *,
        started: Times | None = None,
    ) -> EndedBatch:
        """Apply ``transition``, one that ends a task, to the statuses of ``task_ids`` as
        :meth:`transition_tasks` does, but report only the statuses left unchanged and the keys
        of those ended inside a container. A worker ends most of its tasks this way, and
        reading back a key for each would cost more than the write."""

    def canceled_unstarted(self, since: datetime) -> list[str]:
        """Task ids of tasks (not containers) canceled before they ever started, whose status
        was last modified at or after ``since``: the work a worker must skip."""

    def add_steps(self, uuid: UUID, completed: int, total: int, now: datetime) -> bool:
        """Atomically add to the step counters of an active status; False if it is terminal."""

    def set_stage(self, uuids: Sequence[UUID], stage: str | None, now: datetime) -> int:
        """Set the custom stage of the active statuses among ``uuids``."""

    def set_name(self, uuids: Sequence[UUID], name: str, now: datetime) -> int:
        """Rename the statuses ``uuids``."""

    def beat(self, uuids: Sequence[UUID], now: datetime) -> int:
        """Record that the workers holding ``uuids`` are alive (active ones only: a task
        whose start is not written yet is held as much as a running one)."""

    def lost(self, before: datetime, limit: int) -> list[TaskStatus]:
        """Tasks (not containers) whose worker has not stamped them since ``before``, oldest
        stamp first: In Progress ones, and Pending or Retrying ones that a worker stamped
        after they entered that state (``heartbeat_at > modified``: it held them) and whose
        queue does not deliver them again. A task waiting in its queue is never stamped in
        that state, so it is never lost (see :func:`taskstatus.models.is_lost`)."""

    def seal(self, uuid: UUID, now: datetime) -> None:
        """Mark a container as complete: no more children will be added."""

    def add_artifact(self, artifact: Artifact) -> None: ...

    def delete(self, uuid: UUID) -> list[Artifact]:
        """Delete a status with its descendants and artifacts; return the deleted file
        artifacts so their files can be removed."""

    def purge(self, before: datetime, batch_size: int) -> Iterator[tuple[int, list[Artifact]]]:
        """Delete finished top-level statuses created before ``before`` whose descendants are
        all finished, one short transaction per batch; yield (statuses deleted, file
        artifacts) per batch."""

    # -- reads -------------------------------------------------------------------------------
    def get(self, uuid: UUID) -> TaskStatus | None: ...

    def get_by_task_id(self, task_id: str) -> TaskStatus | None: ...

    def query(self, query: StatusQuery) -> list[TaskStatus]: ...

    def count(self, query: StatusQuery) -> int: ...

    def children(self, uuid: UUID) -> list[TaskStatus]: ...

    def ancestors(self, uuid: UUID) -> list[TaskStatus]:
        """Parent first, then its parent, up to the root."""

    def child_states(self, uuid: UUID) -> Counter[State]: ...

    def summary(self) -> Summary:
        """Counts by state and the start of the oldest run In Progress: read at every scrape
        of ``/metrics``, so one cheap query (an index of ``state``), whatever the size."""

    def step_sums(self, uuids: Sequence[UUID]) -> dict[UUID, tuple[int, int]]:
        """(completed, total) summed over the leaf descendants of each container, also when
        one of ``uuids`` contains another; a container without leaves may be left out."""

    def artifacts(self, status_uuids: Sequence[UUID]) -> list[Artifact]: ...

    def get_artifact(self, uuid: UUID) -> Artifact | None: ...

    def artifact_query(
        self,
        status_uuids: Sequence[UUID] | None,
        user_ids: Sequence[str] | None,
        limit: int,
        offset: int,
        *,
        after: tuple[datetime, UUID] | None = None,
    ) -> list[Artifact]:
        """Artifacts newest first, of the given statuses and/or owners (None: no filter);
        ``after`` (``created``, ``uuid``) pages by key as :attr:`StatusQuery.after`."""

    # -- the change feed (see taskstatus.changes) ----------------------------------------------
    def changes(
        self,
        after: Position,
        limit: int,
        *,
        user_ids: Sequence[str] | None = None,
        root: UUID | None = None,
    ) -> list[Change]:
        """Up to ``limit`` statuses changed after ``after`` and not yet delivered there
        (:meth:`Position.new`), oldest change first, by (``changed``, row). Filtered in the
        query by owners and by the subtree of ``root`` (itself and all its descendants).
        Every write of a row must give it a newer ``version`` and a ``changed`` stamp from one
        clock, within :data:`~taskstatus.changes.SETTLE` of being visible to readers."""

    def last_changed(self) -> datetime | None:
        """The newest ``changed`` stamp of any status: where "from now on" starts."""

    def change_signal(self) -> ChangeSignal | None:
        """A signal fired when statuses change, if the store can tell (else followers poll)."""


class StoreCore(Protocol):
    """The primitives a store must write itself; :class:`~taskstatus.backends.base.BaseStore`
    builds every other method of :class:`Store` on them (correct, not fast: it answers reads
    by scanning), and a store overrides what it can do better.

    Every write of a status is atomic: :meth:`update` computes the new status from the
    current one with no other write of it in between (a lock, or a compare-and-set on the
    version, retried), so concurrent workers cannot lose an update."""

    url: str

    @abstractmethod
    def insert(self, status: TaskStatus) -> bool:
        """Insert unless a status with this task_id exists; True when inserted. Its row (a
        number never reused) orders statuses of the same ``created``; its version is 1."""

    @abstractmethod
    def update(
        self,
        uuid: UUID,
        change: Callable[[TaskStatus], TaskStatus | None],
        *,
        artifact: Artifact | None = None,
        shown: bool = True,
    ) -> TaskStatus | None:
        """Replace the status ``uuid`` by ``change(status)`` atomically, unless it is missing
        or ``change`` returns None; return the new status. When it changes, add ``artifact``
        in the same transaction, and, if ``shown`` (all writes but a heartbeat), give its row
        a newer version and a newer change stamp (see :meth:`Store.changes`)."""

    @abstractmethod
    def delete(self, uuid: UUID) -> list[Artifact]:
        """Delete a status with its descendants and artifacts; return the deleted file
        artifacts so their files can be removed."""

    @abstractmethod
    def add_artifact(self, artifact: Artifact) -> None:
        """Insert an artifact; LookupError when its status does not exist."""

    @abstractmethod
    def get(self, uuid: UUID) -> TaskStatus | None: ...

    @abstractmethod
    def get_by_task_id(self, task_id: str) -> TaskStatus | None: ...

    @abstractmethod
    def scan(self) -> Iterable[Change]:
        """Every status with its row, version and change stamp, in the order of rows."""

    @abstractmethod
    def scan_artifacts(self) -> Iterable[Artifact]:
        """Every artifact, in the order they were added."""


@runtime_checkable
class AttemptStore(Protocol):
    """A store that keeps the retry history (both stores shipped here do).

    Apart from :class:`Store` so that a store written before the history existed keeps
    working: its retries are counted, as before, and it has no history to show."""

    def end_attempt(
        self,
        uuid: UUID,
        transition: Transition,
        now: datetime,
        *,
        message: str | None,
        traceback: str | None = None,
    ) -> bool:
        """:meth:`Store.transition` for a retry (``RETRY``): when it applies, record the
        attempt it ended (:func:`~taskstatus.models.ended_attempt`, from the status as it
        was) with ``message``, in the same transaction."""

    def attempts(self, uuid: UUID) -> list[Attempt]:
        """The attempts of a status that ended, oldest first."""
