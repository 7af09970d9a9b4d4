"""The :class:`~taskstatus.store.Store` methods built on the few primitives of
:class:`~taskstatus.store.StoreCore`, so that a new store starts with those alone.

Transitions use :func:`taskstatus.models.apply` through :meth:`StoreCore.update`, the reference
meaning of a ``Transition``; reads scan every status. That is correct, not fast: a store
overrides the methods it can answer better (the SQL store, every one that SQL answers
faster).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import datetime
from functools import partial
from uuid import UUID

from ..models import (
    ACTIVE_STATES,
    TERMINAL_STATES,
    Artifact,
    State,
    TaskStatus,
    Transition,
    apply,
    is_lost,
)
from ..models import add_steps as clamped_add
from ..store import (
    Change,
    ChangeSignal,
    EndedBatch,
    Position,
    StatusQuery,
    StoreCore,
    Summary,
    TaskKey,
    Times,
    per_task,
)

__all__ = ["BaseStore"]


def _select(rows: Iterable[tuple[TaskStatus, int]], query: StatusQuery) -> list[TaskStatus]:
    """The statuses among ``rows`` (each with its row number) that ``query`` finds, newest
    first by (``created``, row), keyset and page applied."""
    rows = list(rows)
    if query.after is None:
        found = [(s, row) for s, row in rows if query.matches(s)]
    else:
        key_created, key_uuid = query.after
        # A deleted key status has no row: its siblings of the same ``created`` go with it.
        key_row = next((row for s, row in rows if s.uuid == key_uuid), 0)
        found = [
            (s, row)
            for s, row in rows
            if query.matches(s)
            and s.created is not None
            and (s.created < key_created or (s.created == key_created and row < key_row))
        ]
    found.sort(key=lambda item: (item[0].created, item[1]), reverse=True)
    end = None if query.limit is None else query.offset + query.limit
    return [s for s, _ in found[query.offset : end]]


class BaseStore(StoreCore):
    """Subclass it and write the :class:`~taskstatus.store.StoreCore` primitives: the result
    is a complete :class:`~taskstatus.store.Store`."""

    def open(self) -> None:
        """Nothing to connect to, unless a store says otherwise."""

    def close(self) -> None:
        """Nothing to release, unless a store says otherwise."""

    # -- writes ------------------------------------------------------------------------------
    def insert_many(self, statuses: Sequence[TaskStatus]) -> bool:
        """One :meth:`insert` after another, none if one task id exists already (against a
        concurrent insert of the same task id, a store overrides it with one transaction)."""
        if any(self.get_by_task_id(status.task_id) is not None for status in statuses):
            return False
        inserted = [self.insert(status) for status in statuses]  # each, even after a False
        return all(inserted)

    def transition(
        self,
        uuid: UUID,
        transition: Transition,
        now: datetime,
        *,
        traceback: str | None = None,
        artifact: Artifact | None = None,
    ) -> bool:
        def change(status: TaskStatus) -> TaskStatus | None:
            new = apply(status, transition, now)
            if new is not None and traceback is not None:
                new = replace(new, traceback=traceback)
            return new

        return self.update(uuid, change, artifact=artifact) is not None

    def transition_tasks(
        self,
        task_ids: Sequence[str],
        transition: Transition,
        now: Times,
        *,
        unchanged_since: datetime | None = None,
        started: Times | None = None,
    ) -> list[TaskKey]:
        at = per_task(task_ids, now)
        began = at if started is None else per_task(task_ids, started)

        def change(status: TaskStatus, task_id: str) -> TaskStatus | None:
            if (
                unchanged_since is not None
                and status.modified is not None
                and status.modified >= unchanged_since
            ):
                return None
            return apply(status, transition, at[task_id], began[task_id])

        changed = []
        for task_id in at:
            status = self.get_by_task_id(task_id)
            if status is not None and self.update(status.uuid, partial(change, task_id=task_id)):
                changed.append(
                    TaskKey(task_id, status.uuid, status.parent_uuid, status.is_container)
                )
        return changed

    def end_tasks(
        self,
        task_ids: Sequence[str],
        transition: Transition,
        now: Times,
        *,
        started: Times | None = None,
    ) -> EndedBatch:
        changed = self.transition_tasks(task_ids, transition, now, started=started)
        return EndedBatch.of(task_ids, changed)

    def add_steps(self, uuid: UUID, completed: int, total: int, now: datetime) -> bool:
        def change(s: TaskStatus) -> TaskStatus | None:
            if s.state in TERMINAL_STATES:
                return None
            return replace(
                s,
                completed_steps=clamped_add(s.completed_steps, completed),
                total_steps=clamped_add(s.total_steps, total),
                modified=now,
            )

        return self.update(uuid, change) is not None

    def set_stage(self, uuids: Sequence[UUID], stage: str | None, now: datetime) -> int:
        def change(s: TaskStatus) -> TaskStatus | None:
            return replace(s, stage=stage, modified=now) if s.state is State.IN_PROGRESS else None

        return sum(self.update(u, change) is not None for u in uuids)

    def set_name(self, uuids: Sequence[UUID], name: str, now: datetime) -> int:
        def change(s: TaskStatus) -> TaskStatus:
            return replace(s, name=name, modified=now)

        return sum(self.update(u, change) is not None for u in uuids)

    def beat(self, uuids: Sequence[UUID], now: datetime) -> int:
        def change(s: TaskStatus) -> TaskStatus | None:
            return replace(s, heartbeat_at=now) if s.state in ACTIVE_STATES else None

        # Not a change a follower is shown.
        return sum(self.update(u, change, shown=False) is not None for u in uuids)

    def seal(self, uuid: UUID, now: datetime) -> None:
        self.update(uuid, lambda s: replace(s, sealed=True, modified=now))

    def purge(self, before: datetime, batch_size: int) -> Iterator[tuple[int, list[Artifact]]]:
        roots = [
            s.uuid
            for s in self._snapshot()
            if s.parent_uuid is None
            and s.state in TERMINAL_STATES
            and s.created is not None
            and s.created < before
        ]
        for i in range(0, len(roots), batch_size):
            kids = _children(self._snapshot())
            deleted, files = 0, []
            for root in roots[i : i + batch_size]:
                tree = _subtree(kids, root)
                if all(s.state in TERMINAL_STATES for s in tree):
                    files += self.delete(root)
                    deleted += 1 + len(tree)
            yield deleted, files

    # -- reads -------------------------------------------------------------------------------
    def _snapshot(self) -> list[TaskStatus]:
        return [c.status for c in self.scan()]

    def canceled_unstarted(self, since: datetime) -> list[str]:
        return [
            s.task_id
            for s in self._snapshot()
            if s.state is State.CANCELED
            and s.started_at is None
            and not s.is_container
            and s.modified is not None
            and s.modified >= since
        ]

    def lost(self, before: datetime, limit: int) -> list[TaskStatus]:
        found = [s for s in self._snapshot() if is_lost(s, before)]
        return sorted(found, key=lambda s: s.heartbeat_at or before)[:limit]

    def query(self, query: StatusQuery) -> list[TaskStatus]:
        return _select(((c.status, c.row) for c in self.scan()), query)

    def count(self, query: StatusQuery) -> int:
        return len(self.query(replace(query, limit=None, offset=0)))

    def children(self, uuid: UUID) -> list[TaskStatus]:
        return self.query(StatusQuery(parent=uuid, limit=None))[::-1]

    def ancestors(self, uuid: UUID) -> list[TaskStatus]:
        chain: list[TaskStatus] = []
        current = self.get(uuid)
        seen = {uuid}
        while current is not None and current.parent_uuid is not None:
            if current.parent_uuid in seen:
                break  # a cycle of parents (a damaged store) ends the walk, not loops
            seen.add(current.parent_uuid)
            current = self.get(current.parent_uuid)
            if current is not None:
                chain.append(current)
        return chain

    def child_states(self, uuid: UUID) -> Counter[State]:
        return Counter(s.state for s in self.children(uuid))

    def summary(self) -> Summary:
        counts: Counter[State] = Counter()
        oldest: datetime | None = None
        for s in self._snapshot():
            counts[s.state] += 1
            started = s.attempt_started_at or s.started_at
            if s.state is State.IN_PROGRESS and not s.is_container and started is not None:
                oldest = started if oldest is None else min(oldest, started)
        return Summary(counts, oldest)

    def step_sums(self, uuids: Sequence[UUID]) -> dict[UUID, tuple[int, int]]:
        kids = _children(self._snapshot())
        sums: dict[UUID, tuple[int, int]] = {}
        for root in uuids:
            leaves = [s for s in _subtree(kids, root) if not s.is_container]
            if leaves:
                sums[root] = (
                    sum(s.completed_steps for s in leaves),
                    sum(s.total_steps for s in leaves),
                )
        return sums

    def artifacts(self, status_uuids: Sequence[UUID]) -> list[Artifact]:
        wanted = set(status_uuids)
        return [a for a in self.scan_artifacts() if a.status_uuid in wanted]

    def get_artifact(self, uuid: UUID) -> Artifact | None:
        return next((a for a in self.scan_artifacts() if a.uuid == uuid), None)

    def artifact_query(
        self,
        status_uuids: Sequence[UUID] | None,
        user_ids: Sequence[str] | None,
        limit: int,
        offset: int,
        *,
        after: tuple[datetime, UUID] | None = None,
    ) -> list[Artifact]:
        owners = {s.uuid: s.user_id for s in self._snapshot()}
        # The order they were added breaks ties of ``created``, as the SQL store's ids.
        every = list(self.scan_artifacts())
        rank = {a.uuid: n for n, a in enumerate(every, 1)}
        found = [
            a
            for a in every
            if (status_uuids is None or a.status_uuid in status_uuids)
            and (user_ids is None or owners.get(a.status_uuid) in user_ids)
            and (after is None or (a.created, rank[a.uuid]) < (after[0], rank.get(after[1], 0)))
        ]
        found.sort(key=lambda a: (a.created, rank[a.uuid]), reverse=True)
        return found[offset : offset + limit]

    # -- the change feed ---------------------------------------------------------------------
    def changes(
        self,
        after: Position,
        limit: int,
        *,
        user_ids: Sequence[str] | None = None,
        root: UUID | None = None,
    ) -> list[Change]:
        rows = list(self.scan())
        within = None
        if root is not None:
            within = {s.uuid for s in _subtree(_children(c.status for c in rows), root)} | {root}
        found = [
            c
            for c in rows
            if (after.floor is None or c.changed >= after.floor)
            and (user_ids is None or c.status.user_id in user_ids)
            and (within is None or c.status.uuid in within)
        ]
        found.sort(key=lambda c: (c.changed, c.row))
        return after.new(found)[:limit]

    def last_changed(self) -> datetime | None:
        return max((c.changed for c in self.scan()), default=None)

    def change_signal(self) -> ChangeSignal | None:
        """None: followers poll, unless a store can tell when statuses change."""
        return None


def _children(statuses: Iterable[TaskStatus]) -> dict[UUID | None, list[TaskStatus]]:
    kids: dict[UUID | None, list[TaskStatus]] = defaultdict(list)
    for s in statuses:
        kids[s.parent_uuid].append(s)
    return kids


def _subtree(kids: dict[UUID | None, list[TaskStatus]], root: UUID) -> list[TaskStatus]:
    """The descendants of ``root``, found in ``kids``."""
    found = list(kids.get(root, ()))
    for s in found:
        found += kids.get(s.uuid, ())
    return found
