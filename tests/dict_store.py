"""A store written against the :class:`~taskstatus.store.StoreCore` primitives alone: the
proof that a third-party store needs no more (``docs/storage.md`` shows the same)."""

from __future__ import annotations

import itertools
import threading
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from uuid import UUID

import taskstatus
from taskstatus.backends.base import BaseStore
from taskstatus.changes import Change
from taskstatus.models import Artifact


class DictStore(BaseStore):
    """Each status kept as the :class:`Change` its last write made, under one lock."""

    def __init__(self, url: str = "dict://") -> None:
        self.url = url
        self._lock = threading.RLock()
        self._rows: dict[UUID, Change] = {}
        self._artifacts: dict[UUID, Artifact] = {}
        self._next_row = itertools.count(1)
        self._stamp = datetime.min.replace(tzinfo=timezone.utc)

    def _write(self, status, row, version):
        # A strictly newer stamp for every write, from one clock.
        self._stamp = max(datetime.now(timezone.utc), self._stamp + timedelta(microseconds=1))
        self._rows[status.uuid] = Change(status, row, version, self._stamp)

    def insert(self, status):
        with self._lock:
            if self.get_by_task_id(status.task_id) is not None:
                return False
            if status.parent_uuid is not None and status.parent_uuid not in self._rows:
                raise LookupError(f"parent status {status.parent_uuid} does not exist")
            self._write(replace(status, _manager=None), next(self._next_row), 1)
            return True

    def update(self, uuid, change, *, artifact=None, shown=True):
        with self._lock:
            old = self._rows.get(uuid)
            new = None if old is None else change(old.status)
            if new is None:
                return None
            if artifact is not None:
                self.add_artifact(artifact)
            if shown:
                self._write(new, old.row, old.version + 1)
            else:
                self._rows[uuid] = replace(old, status=new)
            return new

    def delete(self, uuid):
        with self._lock:
            doomed = {uuid} & self._rows.keys()
            while (
                below := {u for u, c in self._rows.items() if c.status.parent_uuid in doomed}
                - doomed
            ):
                doomed |= below
            files = []
            for a in [a for a in self._artifacts.values() if a.status_uuid in doomed]:
                del self._artifacts[a.uuid]
                files += [a] if a.file else []
            for u in doomed:
                del self._rows[u]
            return files

    def add_artifact(self, artifact):
        with self._lock:
            if artifact.status_uuid not in self._rows:
                raise LookupError(f"status {artifact.status_uuid} does not exist")
            self._artifacts[artifact.uuid] = replace(artifact, _manager=None)

    def get(self, uuid):
        with self._lock:
            found = self._rows.get(uuid)
            return None if found is None else found.status

    def get_by_task_id(self, task_id):
        with self._lock:
            return next(
                (c.status for c in self._rows.values() if c.status.task_id == task_id), None
            )

    def scan(self):
        with self._lock:
            return list(self._rows.values())

    def scan_artifacts(self):
        with self._lock:
            return list(self._artifacts.values())


@taskstatus.hookimpl
def taskstatus_store(url):
    """The plugin that chooses it, for ``dict://`` URLs."""
    return DictStore(url) if url.startswith("dict://") else None
