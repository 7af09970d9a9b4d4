"""An in-memory store for unit tests and throwaway scripts (``memory://``).

It writes the :class:`~taskstatus.store.StoreCore` primitives under one lock and takes the rest
from :class:`~taskstatus.backends.base.BaseStore`, so it behaves like the SQL store within one
process; nothing survives the process.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from uuid import UUID

from ..models import Artifact, Attempt, TaskStatus, Transition, ended_attempt
from ..store import Change, ChangeSignal
from .base import BaseStore

__all__ = ["MemoryStore"]


class MemoryStore(BaseStore):
    """A :class:`~taskstatus.store.Store` kept in a dict."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._lock = threading.RLock()
        self._statuses: dict[UUID, TaskStatus] = {}
        self._by_task_id: dict[str, UUID] = {}
        self._artifacts: dict[UUID, Artifact] = {}
        #: The retry history of each status that has one, oldest first.
        self._attempts: dict[UUID, list[Attempt]] = {}
        #: The change feed: uuid -> (row, version, stamp), in the order of rows (the SQL
        #: stores' ids, never reused); stamps strictly increase.
        self._changes: dict[UUID, tuple[int, int, datetime]] = {}
        self._rows = itertools.count(1)
        self._last_stamp = datetime.min.replace(tzinfo=timezone.utc)
        self._signal = ChangeSignal()

    # -- writes ------------------------------------------------------------------------------
    def insert(self, status: TaskStatus) -> bool:
        with self._lock:
            if status.task_id in self._by_task_id:
                return False
            if status.parent_uuid is not None and status.parent_uuid not in self._statuses:
                raise LookupError(f"parent status {status.parent_uuid} does not exist")
            self._statuses[status.uuid] = replace(status, _manager=None)
            self._by_task_id[status.task_id] = status.uuid
            self._changed(status.uuid, next(self._rows), 1)
            return True

    def insert_many(self, statuses: Sequence[TaskStatus]) -> bool:
        with self._lock:  # all or none: nothing comes between the check and the inserts
            return super().insert_many(statuses)

    def _changed(self, uuid: UUID, row: int, version: int) -> None:
        stamp = max(datetime.now(timezone.utc), self._last_stamp + timedelta(microseconds=1))
        self._changes[uuid] = (row, version, stamp)
        self._last_stamp = stamp
        self._signal.fire()

    def update(
        self,
        uuid: UUID,
        change: Callable[[TaskStatus], TaskStatus | None],
        *,
        artifact: Artifact | None = None,
        shown: bool = True,
    ) -> TaskStatus | None:
        with self._lock:
            current = self._statuses.get(uuid)
            new = change(current) if current is not None else None
            if new is None:
                return None
            self._statuses[uuid] = new
            if artifact is not None:
                self.add_artifact(artifact)
            if shown:
                row, version, _ = self._changes[uuid]
                self._changed(uuid, row, version + 1)
            return new

    def end_attempt(
        self,
        uuid: UUID,
        transition: Transition,
        now: datetime,
        *,
        message: str | None,
        traceback: str | None = None,
    ) -> bool:
        with self._lock:  # re-entrant: the retry and its attempt as one
            before = self._statuses.get(uuid)
            if before is None or not self.transition(uuid, transition, now, traceback=traceback):
                return False
            self._attempts.setdefault(uuid, []).append(ended_attempt(before, now, message))
            return True

    def attempts(self, uuid: UUID) -> list[Attempt]:
        with self._lock:
            return list(self._attempts.get(uuid, ()))

    def add_artifact(self, artifact: Artifact) -> None:
        with self._lock:
            if artifact.status_uuid not in self._statuses:
                raise LookupError(f"status {artifact.status_uuid} does not exist")
            self._artifacts[artifact.uuid] = replace(artifact, _manager=None)

    def delete(self, uuid: UUID) -> list[Artifact]:
        with self._lock:
            if uuid not in self._statuses:
                return []
            doomed = [uuid]
            for u in doomed:
                doomed += [s.uuid for s in self._statuses.values() if s.parent_uuid == u]
            gone = [a for a in self._artifacts.values() if a.status_uuid in doomed]
            for a in gone:
                del self._artifacts[a.uuid]
            for u in doomed:
                del self._by_task_id[self._statuses.pop(u).task_id]
                del self._changes[u]
                self._attempts.pop(u, None)
            return [a for a in gone if a.file]

    # -- reads -------------------------------------------------------------------------------
    def get(self, uuid: UUID) -> TaskStatus | None:
        with self._lock:
            return self._statuses.get(uuid)

    def get_by_task_id(self, task_id: str) -> TaskStatus | None:
        with self._lock:
            uuid = self._by_task_id.get(task_id)
            return self._statuses.get(uuid) if uuid else None

    def scan(self) -> list[Change]:
        with self._lock:
            return [
                Change(self._statuses[uuid], row, version, stamp)
                for uuid, (row, version, stamp) in self._changes.items()
            ]

    def scan_artifacts(self) -> list[Artifact]:
        with self._lock:
            return list(self._artifacts.values())  # in the order added: dicts keep it

    def change_signal(self) -> ChangeSignal | None:
        return self._signal
