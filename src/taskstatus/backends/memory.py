"""An in-memory store for unit tests and throwaway scripts (``memory://``).

It applies the model's rules with :func:`taskstatus.models.apply` under one lock, so it
behaves like the SQL store within one process; nothing survives the process.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from functools import partial
from uuid import UUID

from ..models import (
    TERMINAL_STATES,
    Artifact,
    Attempt,
    State,
    TaskStatus,
    Transition,
    add_steps,
    apply,
    ended_attempt,
    is_lost,
)
from ..store import (
    Change,
    ChangeSignal,
    EndedBatch,
    Position,
    StatusQuery,
    TaskKey,
    Times,
    per_task,
)

__all__ = ["MemoryStore"]


class MemoryStore:
    """A :class:`~taskstatus.store.Store` kept in a dict."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._lock = threading.RLock()
        self._statuses: dict[UUID, TaskStatus] = {}
        self._by_task_id: dict[str, UUID] = {}
        self._artifacts: dict[UUID, Artifact] = {}
        #: The retry history of each status that has one, oldest first.
        self._attempts: dict[UUID, list[Attempt]] = {}
        #: Insertion order (the SQL stores' ids): breaks ties of ``created``. Never reused,
        #: so a delete cannot give two statuses the same place.
        self._order: dict[UUID, int] = {}
        self._inserted = itertools.count(1)
        #: The change feed: uuid -> (row, version, stamp); stamps strictly increase.
        self._changes: dict[UUID, tuple[int, int, datetime]] = {}
        self._last_stamp = datetime.min.replace(tzinfo=timezone.utc)
        self._signal = ChangeSignal()

    def open(self) -> None:
        """Nothing to connect to."""

    def close(self) -> None:
        """Nothing to release."""

    # -- writes ------------------------------------------------------------------------------
    def insert(self, status: TaskStatus) -> bool:
        with self._lock:
            if status.task_id in self._by_task_id:
                return False
            if status.parent_uuid is not None and status.parent_uuid not in self._statuses:
                raise LookupError(f"parent status {status.parent_uuid} does not exist")
            self._statuses[status.uuid] = replace(status, _manager=None)
            self._by_task_id[status.task_id] = status.uuid
            self._order[status.uuid] = row = next(self._inserted)
            self._changed(status.uuid, row, 1)
            return True

    def _changed(self, uuid: UUID, row: int, version: int) -> None:
        stamp = max(datetime.now(timezone.utc), self._last_stamp + timedelta(microseconds=1))
        self._changes[uuid] = (row, version, stamp)
        self._last_stamp = stamp
        self._signal.fire()

    def _update(
        self, uuid: UUID, change: Callable[[TaskStatus], TaskStatus | None], *, shown: bool = True
    ) -> bool:
        with self._lock:
            current = self._statuses.get(uuid)
            new = change(current) if current is not None else None
            if new is None:
                return False
            self._statuses[uuid] = new
            if shown:
                row, version, _ = self._changes[uuid]
                self._changed(uuid, row, version + 1)
            return True

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

        with self._lock:  # re-entrant: the transition and its artifact as one
            if not self._update(uuid, change):
                return False
            if artifact is not None:
                self.add_artifact(artifact)
        return True

    def end_attempt(
        self,
        uuid: UUID,
        transition: Transition,
        now: datetime,
        *,
        message: str | None,
        traceback: str | None = None,
    ) -> bool:
        with self._lock:
            before = self._statuses.get(uuid)
            if before is None or not self.transition(uuid, transition, now, traceback=traceback):
                return False
            self._attempts.setdefault(uuid, []).append(ended_attempt(before, now, message))
            return True

    def attempts(self, uuid: UUID) -> list[Attempt]:
        with self._lock:
            return list(self._attempts.get(uuid, ()))

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
        changed = []
        with self._lock:
            for task_id in at:
                uuid = self._by_task_id.get(task_id)
                if uuid is None:
                    continue
                modified = self._statuses[uuid].modified
                if (
                    unchanged_since is not None
                    and modified is not None
                    and modified >= unchanged_since
                ):
                    continue
                change = partial(
                    apply, transition=transition, now=at[task_id], started=began[task_id]
                )
                if self._update(uuid, change):
                    s = self._statuses[uuid]
                    changed.append(TaskKey(task_id, uuid, s.parent_uuid, s.is_container))
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

    def canceled_unstarted(self, since: datetime) -> list[str]:
        with self._lock:
            return [
                s.task_id
                for s in self._statuses.values()
                if s.state is State.CANCELED
                and s.started_at is None
                and not s.is_container
                and s.modified is not None
                and s.modified >= since
            ]

    def add_steps(self, uuid: UUID, completed: int, total: int, now: datetime) -> bool:
        def change(s: TaskStatus) -> TaskStatus | None:
            if s.state in TERMINAL_STATES:
                return None
            return replace(
                s,
                completed_steps=add_steps(s.completed_steps, completed),
                total_steps=add_steps(s.total_steps, total),
                modified=now,
            )

        return self._update(uuid, change)

    def set_stage(self, uuids: Sequence[UUID], stage: str | None, now: datetime) -> int:
        def change(s: TaskStatus) -> TaskStatus | None:
            return replace(s, stage=stage, modified=now) if s.state is State.IN_PROGRESS else None

        return sum(self._update(u, change) for u in uuids)

    def set_name(self, uuids: Sequence[UUID], name: str, now: datetime) -> int:
        return sum(self._update(u, lambda s: replace(s, name=name, modified=now)) for u in uuids)

    def beat(self, uuids: Sequence[UUID], now: datetime) -> int:
        def change(s: TaskStatus) -> TaskStatus | None:
            return replace(s, heartbeat_at=now) if s.state is State.IN_PROGRESS else None

        # Not a change a follower is shown, as in the SQL store.
        return sum(self._update(u, change, shown=False) for u in uuids)

    def lost(self, before: datetime, limit: int) -> list[TaskStatus]:
        with self._lock:
            found = [s for s in self._statuses.values() if is_lost(s, before)]
        return sorted(found, key=lambda s: s.heartbeat_at or before)[:limit]

    def seal(self, uuid: UUID, now: datetime) -> None:
        self._update(uuid, lambda s: replace(s, sealed=True, modified=now))

    def add_artifact(self, artifact: Artifact) -> None:
        with self._lock:
            if artifact.status_uuid not in self._statuses:
                raise LookupError(f"status {artifact.status_uuid} does not exist")
            self._artifacts[artifact.uuid] = replace(artifact, _manager=None)

    def _subtree(self, uuid: UUID) -> list[UUID]:
        found = [uuid]
        for u in found:
            found += [s.uuid for s in self._statuses.values() if s.parent_uuid == u]
        return found

    def _remove(self, uuids: Sequence[UUID]) -> list[Artifact]:
        doomed = set(uuids)
        files = [a for a in self._artifacts.values() if a.status_uuid in doomed and a.file]
        for a in [a for a in self._artifacts.values() if a.status_uuid in doomed]:
            del self._artifacts[a.uuid]
        for u in doomed:
            status = self._statuses.pop(u)
            del self._by_task_id[status.task_id]
            del self._order[u]
            del self._changes[u]
            self._attempts.pop(u, None)
        return files

    def delete(self, uuid: UUID) -> list[Artifact]:
        with self._lock:
            if uuid not in self._statuses:
                return []
            return self._remove(self._subtree(uuid))

    def purge(self, before: datetime, batch_size: int) -> Iterator[tuple[int, list[Artifact]]]:
        with self._lock:
            roots = [
                s.uuid
                for s in self._statuses.values()
                if s.parent_uuid is None
                and s.state in TERMINAL_STATES
                and s.created is not None
                and s.created < before
            ]
        for i in range(0, len(roots), batch_size):
            with self._lock:
                doomed: list[UUID] = []
                for root in roots[i : i + batch_size]:
                    tree = self._subtree(root)
                    if all(self._statuses[u].state in TERMINAL_STATES for u in tree):
                        doomed += tree
                files = self._remove(doomed)
            yield len(doomed), files

    # -- reads -------------------------------------------------------------------------------
    def get(self, uuid: UUID) -> TaskStatus | None:
        with self._lock:
            return self._statuses.get(uuid)

    def get_by_task_id(self, task_id: str) -> TaskStatus | None:
        with self._lock:
            uuid = self._by_task_id.get(task_id)
            return self._statuses.get(uuid) if uuid else None

    def _matches(self, s: TaskStatus, q: StatusQuery) -> bool:
        return q.matches(s) and (
            q.after is None or self._is_after(s.created, self._order[s.uuid], q.after)
        )

    def _is_after(self, created: datetime | None, order: int, key: tuple[datetime, UUID]) -> bool:
        """Whether a row comes after ``key`` newest first (as the SQL store's keyset)."""
        key_created, key_uuid = key
        if created is None or created != key_created:
            return created is not None and created < key_created
        return order < self._order.get(key_uuid, 0)

    def _newest_first(self, items: Sequence[TaskStatus]) -> list[TaskStatus]:
        return sorted(items, key=lambda s: (s.created, self._order[s.uuid]), reverse=True)

    def query(self, query: StatusQuery) -> list[TaskStatus]:
        with self._lock:
            found = self._newest_first(
                [s for s in self._statuses.values() if self._matches(s, query)]
            )
        end = None if query.limit is None else query.offset + query.limit
        return found[query.offset : end]

    def count(self, query: StatusQuery) -> int:
        with self._lock:
            return sum(self._matches(s, query) for s in self._statuses.values())

    def children(self, uuid: UUID) -> list[TaskStatus]:
        with self._lock:
            kids = [s for s in self._statuses.values() if s.parent_uuid == uuid]
        return list(reversed(self._newest_first(kids)))

    def ancestors(self, uuid: UUID) -> list[TaskStatus]:
        with self._lock:
            chain: list[TaskStatus] = []
            current = self._statuses.get(uuid)
            while current is not None and current.parent_uuid is not None:
                current = self._statuses.get(current.parent_uuid)
                if current is not None:
                    chain.append(current)
            return chain

    def child_states(self, uuid: UUID) -> Counter[State]:
        with self._lock:
            return Counter(s.state for s in self._statuses.values() if s.parent_uuid == uuid)

    def step_sums(self, uuids: Sequence[UUID]) -> dict[UUID, tuple[int, int]]:
        sums: dict[UUID, tuple[int, int]] = {}
        with self._lock:
            for root in uuids:
                leaves = [
                    self._statuses[u]
                    for u in self._subtree(root)[1:]
                    if not self._statuses[u].is_container
                ]
                if leaves:
                    sums[root] = (
                        sum(s.completed_steps for s in leaves),
                        sum(s.total_steps for s in leaves),
                    )
        return sums

    def artifacts(self, status_uuids: Sequence[UUID]) -> list[Artifact]:
        wanted = set(status_uuids)
        with self._lock:
            return [a for a in self._artifacts.values() if a.status_uuid in wanted]

    def get_artifact(self, uuid: UUID) -> Artifact | None:
        with self._lock:
            return self._artifacts.get(uuid)

    def artifact_query(
        self,
        status_uuids: Sequence[UUID] | None,
        user_ids: Sequence[str] | None,
        limit: int,
        offset: int,
        *,
        after: tuple[datetime, UUID] | None = None,
    ) -> list[Artifact]:
        with self._lock:
            # Insertion order, as the SQL store's ids (dicts keep it).
            rank = {uuid: n for n, uuid in enumerate(self._artifacts)}
            found = [
                a
                for a in self._artifacts.values()
                if (status_uuids is None or a.status_uuid in status_uuids)
                and (user_ids is None or self._statuses[a.status_uuid].user_id in user_ids)
                and (
                    after is None or (a.created, rank[a.uuid]) < (after[0], rank.get(after[1], -1))
                )
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
        with self._lock:
            within = None if root is None else set(self._subtree(root))
            found = [
                Change(self._statuses[uuid], row, version, stamp)
                for uuid, (row, version, stamp) in self._changes.items()
                if (after.floor is None or stamp >= after.floor)
                and (user_ids is None or self._statuses[uuid].user_id in user_ids)
                and (within is None or uuid in within)
            ]
        found.sort(key=lambda c: (c.changed, c.row))
        return after.new(found)[:limit]

    def last_changed(self) -> datetime | None:
        with self._lock:
            return max((stamp for _, _, stamp in self._changes.values()), default=None)

    def change_signal(self) -> ChangeSignal | None:
        return self._signal
