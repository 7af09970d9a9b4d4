"""The Tracker: one configured store, plugin manager and artifact storage, and the API over them.

Reads go straight to the store; every change goes through the lifecycle hooks, so plugins see
API calls (``status.cancel()``) exactly like queue events. Queue adapters use
``tracker.lifecycle`` (:class:`~taskstatus.lifecycle.Lifecycle`), which holds the logic every
queue shares (owner check, group membership, outcome of an exception), and nothing else.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid as uuid_module
import warnings
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, BinaryIO
from uuid import UUID

import pluggy

from .artifacts import ArtifactStorage
from .events import TaskEvent
from .exceptions import ConfigurationError, NotFound
from .heartbeat import Heartbeat
from .lifecycle import Lifecycle
from .models import (
    MAX_STEPS,
    Artifact,
    Attempt,
    State,
    TaskStatus,
    check_artifact_payload,
    check_key,
    check_steps,
    check_text,
    clean_text,
)
from .plugins import make_plugin_manager
from .recorder import Recorder, utcnow
from .settings import Settings, hide_password
from .store import ANY, AttemptStore, StatusQuery, Store, Summary
from .tracking import LiveCalls

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from .changes import Position
    from .feed import Update

__all__ = ["Tracker"]

log = logging.getLogger(__name__)


def _warn_missing(artifact: Artifact, location: str) -> None:
    log.warning(
        "the file of artifact %s (%s) is missing: %s", artifact.uuid, artifact.name, location
    )


def parse_uuid(value: UUID | str, what: str = "status") -> UUID:
    if isinstance(value, UUID):
        return value
    if not isinstance(value, str):
        raise TypeError(f"{what} id must be a UUID or str, got {type(value).__name__}")
    try:
        return UUID(value)
    except ValueError:
        raise ValueError(f"invalid {what} id {value!r}: not a UUID") from None


class _Moved:
    """A method that moved to :class:`~taskstatus.lifecycle.Lifecycle`: still works, warns."""

    def __init__(self, new: str) -> None:
        self.new = new
        self.old = new

    def __set_name__(self, owner: type, name: str) -> None:
        self.old = name

    def __get__(self, tracker: Tracker | None, owner: type | None = None) -> Any:
        if tracker is None:
            return self
        warnings.warn(
            f"Tracker.{self.old} is deprecated: use tracker.lifecycle.{self.new}",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(tracker.lifecycle, self.new)


class Tracker:
    """A configured taskstatus: store + plugins + artifact storage + settings."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        pm: pluggy.PluginManager | None = None,
        store: Store | None = None,
        plugins: Iterable[object] = (),
    ) -> None:
        self.settings = settings or Settings.load()
        self.pm = pm or make_plugin_manager()
        # Before the store is chosen, so that a plugin may provide it.
        for plugin in plugins:
            self.pm.register(plugin)
        self.store = store or self._store_for(self.settings.url)
        self.recorder = Recorder(self.store, self.pm, bind=lambda s: self._bind([s])[0])
        self.heartbeat = Heartbeat(
            self.recorder.beat,
            self.recorder.reap_lost,
            self.settings.heartbeat_interval,
            self.settings.lost_after,
        )
        self.pm.register(self.recorder, name="taskstatus.recorder")
        self._live_calls = LiveCalls(
            progress=self.pm.hook.taskstatus_progress,
            key=self.recorder.key,
            read=self.get,
            add_artifact=self.add_artifact,
            watch=self.heartbeat.watch,
        )
        location = self.settings.artifact_url()
        self._artifact_storage = ArtifactStorage(location) if location else None
        #: What queue adapters call (see :mod:`taskstatus.lifecycle`).
        self.lifecycle = Lifecycle(
            self.settings,
            self.pm.hook,
            self.recorder,
            self.heartbeat,
            self._live_calls,
            find=self.find_by_task_id,
        )

    def _store_for(self, url: str) -> Store:
        store = self.pm.hook.taskstatus_store(url=url)
        if store is None:
            scheme = url.partition(":")[0]
            raise ConfigurationError(
                f"unknown store URL scheme {scheme!r} in {hide_password(url)!r}; built in: sqlite, "
                f"postgresql, mysql, mariadb, memory (plugins may add more)"
            )
        return store  # type: ignore[no-any-return]

    @property
    def artifact_storage(self) -> ArtifactStorage:
        """Where artifact files are kept (see :meth:`Settings.artifact_url`); a store with no
        default location and no ``artifact_storage`` raises :class:`ConfigurationError` here,
        before any file is written (text and URL artifacts need no location)."""
        if self._artifact_storage is None:
            scheme = self.settings.url.partition(":")[0]
            raise ConfigurationError(
                f"artifact files need the artifact_storage setting (env "
                f"TASKSTATUS_ARTIFACT_STORAGE) with a {scheme} store: set it to a location "
                f"every process reaches, e.g. s3://bucket/prefix or a shared folder"
            )
        return self._artifact_storage

    @property
    def hook(self) -> Any:
        """The plugin manager's hook relay: ``tracker.hook.taskstatus_<event>(event=...)``."""
        return self.pm.hook

    def open(self) -> Tracker:
        """Connect to the store now (creating the schema on an empty database)."""
        self.store.open()
        return self

    def close(self) -> None:
        self.heartbeat.stop()
        self.recorder.close()
        self.store.close()

    def register(self, plugin: object, name: str | None = None) -> None:
        """Register a plugin (an object or module with ``@taskstatus.hookimpl`` functions)."""
        self.pm.register(plugin, name=name)

    # -- reads ---------------------------------------------------------------------------------
    def _bind(self, statuses: Sequence[TaskStatus]) -> list[TaskStatus]:
        # The one rule for a container's steps, whichever read returns it: the sums over its
        # leaf descendants (0/0 while it has none), never its own columns.
        containers = [s.uuid for s in statuses if s.is_container]
        sums = self.store.step_sums(containers) if containers else {}
        for status in statuses:
            if status.is_container:
                completed, total = sums.get(status.uuid, (0, 0))
                status.completed_steps = min(completed, MAX_STEPS)
                status.total_steps = min(total, MAX_STEPS)
            status.bind(self)
        return list(statuses)

    def get(self, uuid: UUID | str) -> TaskStatus:
        """The status with this public id; :class:`~taskstatus.NotFound` if there is none."""
        key = parse_uuid(uuid)
        self.recorder.drain()
        status = self.store.get(key)
        if status is None:
            raise NotFound(f"no task status with uuid {key}")
        return self._bind([status])[0]

    def get_by_task_id(self, task_id: str) -> TaskStatus:
        """The status of the queue's task id; :class:`~taskstatus.NotFound` if there is none."""
        status = self.find_by_task_id(task_id)
        if status is None:
            raise NotFound(f"no task status with task_id {task_id!r}")
        return status

    def find_by_task_id(self, task_id: str) -> TaskStatus | None:
        """The status of the queue's task id, or None: what a queue adapter asks to learn
        whether a task was recorded already (this process's queued writes first)."""
        if not check_key(task_id, "task_id"):
            raise ValueError("task_id must not be empty")
        self.recorder.drain()
        status = self.store.get_by_task_id(task_id)
        return None if status is None else self._bind([status])[0]

    def query(
        self,
        *,
        user_id: object = None,
        state: State | str | Iterable[State | str] | None = None,
        search: str | None = None,
        parent: UUID | str | Any | None = ANY,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int | None = 50,
        offset: int = 0,
        queue: str | None = None,
        task_class: str | None = None,
        after: TaskStatus | tuple[datetime, UUID] | None = None,
        user_ids: Iterable[object] | None = None,
    ) -> StatusQuery:
        """Validate filters into a :class:`~taskstatus.store.StatusQuery`.

        ``state`` may be several (any of them); ``user_ids``: any of these owners (with
        ``user_id`` too: only that one, if among them); ``after`` (a status, or its
        ``created`` and ``uuid``) pages by key, stable while new statuses arrive, where
        ``offset`` would shift."""
        if limit is not None:
            _check_count(limit, "limit")
        _check_count(offset, "offset")
        for name, value in (("created_after", created_after), ("created_before", created_before)):
            if value is not None and not isinstance(value, datetime):
                raise TypeError(f"{name} must be a datetime, got {type(value).__name__}")
        if isinstance(after, TaskStatus):
            if after.created is None:
                raise ValueError("after= needs a stored status (its created time)")
            after = (after.created, after.uuid)
        elif after is not None and not (
            isinstance(after, tuple)
            and len(after) == 2
            and isinstance(after[0], datetime)
            and isinstance(after[1], UUID)
        ):
            raise TypeError(f"after must be a TaskStatus or (datetime, UUID), got {after!r}")
        if after is not None and after[0].tzinfo is None:
            raise ValueError("after= needs a timezone-aware created time")
        for name, text in (("queue", queue), ("task_class", task_class)):
            if text is not None:
                check_key(text, name)
        if search is not None:
            check_key(search, "search", limit=None)
        states = None
        if state is not None and not isinstance(state, str):
            if not isinstance(state, Iterable):
                raise TypeError(f"state must be a State, a str or several, got {state!r}")
            states = frozenset(State.parse(s) for s in state)
            state = None
        owners = None if user_ids is None else [_owner(owner, "user_ids") for owner in user_ids]
        if user_id is not None:
            owner = _owner(user_id, "user_id")
            owners = [owner] if owners is None or owner in owners else []
        return StatusQuery(
            user_ids=owners,
            state=None if state is None else State.parse(state),
            states=states,
            queue=queue,
            task_class=task_class,
            after=after,
            search=search or None,
            parent=parent if parent is ANY or parent is None else parse_uuid(parent, "parent"),
            created_after=created_after,
            created_before=created_before,
            limit=limit,
            offset=offset,
        )

    def statuses(self, **filters: Any) -> list[TaskStatus]:
        """Statuses matching the filters of :meth:`query`, newest first.

        ``user_id`` compares as text (7 and "7" are the same owner); ``parent=None`` lists only
        top-level statuses, ``parent=<uuid>`` the children of one container.
        """
        query = self.query(**filters)
        self.recorder.drain()
        return self._bind(self.store.query(query))

    def count(self, **filters: Any) -> int:
        filters.pop("limit", None)
        filters.pop("offset", None)
        query = self.query(**filters)
        self.recorder.drain()
        return self.store.count(query)

    def summary(self) -> Summary:
        """Counts by state and the start of the oldest run In Progress, store-wide (for
        monitoring: no owner is named)."""
        self.recorder.drain()
        return self.store.summary()

    def children(self, status: TaskStatus) -> list[TaskStatus]:
        self.recorder.drain()
        return self._bind(self.store.children(status.uuid))

    def artifacts(self, status: TaskStatus) -> list[Artifact]:
        return [a.bind(self) for a in self.store.artifacts([status.uuid])]

    def attempts(self, status: TaskStatus) -> list[Attempt]:
        """The attempts of ``status`` that ended in a retry, oldest first: the history behind
        its ``attempts`` count (empty on a store that keeps no history)."""
        if not isinstance(self.store, AttemptStore):
            return []
        return self.store.attempts(status.uuid)

    def artifacts_of(self, statuses: Sequence[TaskStatus]) -> dict[UUID, list[Artifact]]:
        """The artifacts of many statuses in one read (a page of a list), by status uuid."""
        found: dict[UUID, list[Artifact]] = {}
        if statuses:
            for artifact in self.store.artifacts([s.uuid for s in statuses]):
                found.setdefault(artifact.status_uuid, []).append(artifact.bind(self))
        return found

    def get_artifact(self, uuid: UUID | str) -> Artifact:
        key = parse_uuid(uuid, "artifact")
        artifact = self.store.get_artifact(key)
        if artifact is None:
            raise NotFound(f"no artifact with uuid {key}")
        return artifact.bind(self)

    def query_artifacts(
        self,
        *,
        status: TaskStatus | UUID | str | None = None,
        user_ids: Iterable[object] | None = None,
        limit: int = 50,
        after: Artifact | tuple[datetime, UUID] | None = None,
    ) -> list[Artifact]:
        """Artifacts newest first, of one status and/or some owners' statuses (filtered in
        the query); ``after`` (an artifact, or its ``created`` and ``uuid``) pages by key,
        as :meth:`query`."""
        _check_count(limit, "limit")
        if isinstance(after, Artifact):
            if after.created is None:
                raise ValueError("after= needs a stored artifact (its created time)")
            after = (after.created, after.uuid)
        if isinstance(status, TaskStatus):
            status = status.uuid
        found = self.store.artifact_query(
            None if status is None else [parse_uuid(status)],
            None if user_ids is None else [_owner(owner, "user_ids") for owner in user_ids],
            limit,
            0,
            after=after,
        )
        return [a.bind(self) for a in found]

    def open_artifact(self, artifact: Artifact) -> BinaryIO:
        if artifact.file is None:
            raise ValueError(f"artifact {artifact.uuid} has no file")
        storage = self.artifact_storage
        try:
            return storage.open(artifact.file)
        except FileNotFoundError:
            _warn_missing(artifact, storage.location(artifact.file))
            raise

    def refresh(self, status: TaskStatus) -> TaskStatus:
        return self.get(status.uuid)

    # -- the change feed (taskstatus.feed) -----------------------------------------------------
    def changes(
        self,
        after: str | Position | None = None,
        *,
        limit: int = 100,
        user_id: object = None,
        root: UUID | str | None = None,
    ) -> list[Update]:
        """The statuses changed after the position ``after`` (None: from the start), oldest
        change first, each with the position after it; ValueError for a bad position."""
        from .feed import changes_after

        return changes_after(self, after, limit, user_id, _root(root))

    def change_position(self, *, user_id: object = None, root: UUID | str | None = None) -> str:
        """The position of now for a stream of these filters: following it from there gives
        the changes written after this call."""
        from .feed import owner_ids, start

        return str(start(self, None, owner_ids(user_id), _root(root)))

    def follow(
        self,
        after: str | Position | None = None,
        *,
        user_id: object = None,
        root: UUID | str | None = None,
        poll_interval: float = 1.0,
        min_interval: float = 0.25,
    ) -> Iterator[Update]:
        """Follow changes as they are written, by any process (see :func:`taskstatus.feed.follow`;
        ``after=None``: from now on)."""
        from .feed import follow

        return follow(
            self,
            _position(after),
            user_id=user_id,
            root=_root(root),
            poll_interval=poll_interval,
            min_interval=min_interval,
        )

    def follow_async(
        self,
        after: str | Position | None = None,
        *,
        user_id: object = None,
        root: UUID | str | None = None,
        poll_interval: float = 1.0,
        min_interval: float = 0.25,
    ) -> AsyncIterator[Update]:
        """:meth:`follow` for asyncio (see :func:`taskstatus.feed.follow_async`)."""
        from .feed import follow_async

        return follow_async(
            self,
            _position(after),
            user_id=user_id,
            root=_root(root),
            poll_interval=poll_interval,
            min_interval=min_interval,
        )

    # -- changes through the lifecycle hooks ---------------------------------------------------
    def _fire(self, hook: str, status: TaskStatus, **fields: Any) -> TaskStatus:
        event = TaskEvent(
            task_id=status.task_id,
            queue=status.queue,
            task_class=status.task_class,
            name=fields.pop("name", status.name),
            user_id=status.user_id,
            is_container=status.is_container,
            **fields,
        )
        getattr(self.hook, hook)(event=event)
        return self.get(status.uuid)

    def start(self, status: TaskStatus) -> TaskStatus:
        return self._fire("taskstatus_prerun", status)

    def succeed(self, status: TaskStatus) -> TaskStatus:
        return self._fire("taskstatus_succeed", status)

    def fail(self, status: TaskStatus, message: str) -> TaskStatus:
        if not isinstance(message, str):
            raise TypeError(f"fail() takes a message str, got {type(message).__name__}")
        return self._fire("taskstatus_fail", status, message=message)

    def retry(self, status: TaskStatus) -> TaskStatus:
        return self._fire("taskstatus_retry", status)

    def cancel(self, status: TaskStatus | UUID | str, *, terminate: bool = False) -> TaskStatus:
        """Cancel a status (and a container's children). Once it has ended this does nothing
        and fires no hook: no queue is asked to revoke work that has finished."""
        status = self.get(status.uuid if isinstance(status, TaskStatus) else status)
        if status.is_terminal:
            return status
        return self._fire("taskstatus_cancel", status, terminate=terminate)

    def set_state(self, status: TaskStatus, text: str) -> TaskStatus:
        stage = check_text(text, "set_state() text")
        return self._fire("taskstatus_progress", status, name=None, stage=stage)

    def set_name(self, status: TaskStatus, name: str) -> TaskStatus:
        return self._fire("taskstatus_progress", status, name=check_text(name, "set_name() name"))

    def increment_steps(self, status: TaskStatus, completed: int, total: int) -> TaskStatus:
        check_steps(completed, "steps")
        check_steps(total, "steps")
        return self._fire(
            "taskstatus_progress",
            status,
            name=None,
            completed_delta=completed,
            total_delta=total,
        )

    def add_artifact(
        self,
        status: TaskStatus | UUID,
        *,
        name: str = "Output",
        file: bytes | BinaryIO | None = None,
        filename: str | None = None,
        url: str | None = None,
        text: str | None = None,
        path: str | os.PathLike[str] | None = None,
    ) -> Artifact:
        """Attach a file (``file``: bytes or a binary file object; ``path``: a local file), a
        URL or a text. A ``str`` is never taken for a path unless given as ``path=``: a name
        that came from a user must not copy a server's file into their artifacts."""
        name = check_text(name, "artifact name")
        check_artifact_payload(file=file, url=url, text=text, filename=filename, path=path)
        status_uuid = status.uuid if isinstance(status, TaskStatus) else status
        now = utcnow()
        artifact = Artifact(
            uuid=uuid_module.uuid4(),
            status_uuid=status_uuid,
            name=name,
            url=url.strip() if url else None,
            text=None if text is None else clean_text(text),
            created=now,
            modified=now,
        )
        source = path if path is not None else file
        if source is not None:
            artifact.file = self.artifact_storage.save(status_uuid, artifact.uuid, source, filename)
        try:
            self.store.add_artifact(artifact)
        except BaseException:
            if artifact.file:
                self.artifact_storage.delete([artifact.file])
            raise
        return artifact.bind(self)

    def delete(self, status: TaskStatus | UUID | str) -> None:
        """Delete a status, its descendants, their artifacts and artifact files."""
        key = status.uuid if isinstance(status, TaskStatus) else parse_uuid(status)
        self.recorder.drain()
        if self.store.get(key) is None:
            raise NotFound(f"no task status with uuid {key}")
        self._delete_files(self.store.delete(key))

    def reap_lost(self) -> int:
        """End running tasks whose worker stopped sending heartbeats for ``lost_after``
        seconds (Retrying if their queue redelivers them, else Failed); returns how many.

        Every process running tasks does this on its own; call it from a scheduler too if
        all workers of a queue may be gone for long."""
        return self.recorder.reap_lost(utcnow() - timedelta(seconds=self.settings.lost_after))

    def purge(self, older_than: timedelta | None = None) -> int:
        """Delete finished statuses created before now - (older_than or max_age), with their
        artifacts and files, in short batches; unfinished work is kept. Returns the count."""
        age = self.settings.max_age if older_than is None else older_than
        if not isinstance(age, timedelta) or age < timedelta(0):
            raise ValueError(f"older_than must be a non-negative timedelta, got {older_than!r}")
        deleted = 0
        self.recorder.drain()
        try:
            before = utcnow() - age
        except OverflowError:
            return 0  # older than any date: nothing qualifies
        for count, files in self.store.purge(before, self.settings.purge_batch_size):
            deleted += count
            self._delete_files(files)
        return deleted

    def _delete_files(self, artifacts: Sequence[Artifact]) -> None:
        """Remove the files of deleted artifacts; warn of each that cannot be or is missing."""
        files = {a.file: a for a in artifacts if a.file}
        storage = self._artifact_storage
        if storage is None:
            for path, artifact in files.items():
                log.warning(
                    "the file %s of deleted artifact %s (%s) is left: deleting it needs the "
                    "artifact_storage setting (env TASKSTATUS_ARTIFACT_STORAGE)",
                    path,
                    artifact.uuid,
                    artifact.name,
                )
            return
        for path in storage.delete(files):
            _warn_missing(files[path], storage.location(path))

    # -- containers ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def group(self, name: str, *, user_id: object) -> Iterator[TaskStatus]:
        """A queue-agnostic container: tasks published inside the block become its children.

        The group ends when the block has exited and all its children have ended.
        """
        if user_id is None or (isinstance(user_id, str) and not user_id.strip()):
            raise TypeError("taskstatus.group() needs the owner: user_id=...")
        name = check_text(name, "group name")
        task_id = f"taskstatus.group:{uuid_module.uuid4()}"
        lifecycle = self.lifecycle
        lifecycle.publish_container(
            task_id,
            queue="taskstatus",
            kind="taskstatus.group",
            name=name,
            user_id=str(user_id),
            sealed=False,
        )
        container = lifecycle.find(task_id)  # written now inside a taskstatus.batch() block
        assert container is not None
        try:
            with lifecycle.joining(task_id):
                yield container
        except BaseException:
            if not self.store.children(self.get_by_task_id(task_id).uuid):
                lifecycle.cancel(TaskEvent(task_id=task_id, task_class="taskstatus.group"))
            raise
        finally:
            lifecycle.seal(task_id)

    # -- the adapter-facing names of earlier releases, now on tracker.lifecycle ----------------
    publish = _Moved("publish")
    publish_container = _Moved("publish_container")
    seal = _Moved("seal")
    cancel_task = _Moved("cancel")
    begin = _Moved("start")
    release = _Moved("release")
    end = _Moved("end")
    batch_writes = _Moved("batch_writes")
    writes_batched = _Moved("writes_batched")
    after_write = _Moved("after_write")
    run_waiting = _Moved("run_waiting")
    flush = _Moved("drain")
    prepare_for_fork = _Moved("prepare_for_fork")
    hand_off = _Moved("hand_off")
    take_over = _Moved("take_over")
    hand_back = _Moved("hand_back")
    finish_hand_off = _Moved("finish_hand_off")


def _check_count(value: object, what: str) -> None:
    """A row count or offset: an int the database takes (signed 64-bit), not negative."""
    if type(value) is not int:
        raise TypeError(f"{what} must be an int, got {type(value).__name__}")
    if not 0 <= value <= MAX_STEPS:
        raise ValueError(f"{what} must be between 0 and {MAX_STEPS}, got {value}")


def _owner(value: object, what: str) -> str:
    """An owner id as stored: its text."""
    return check_key(str(value), what)


def _position(after: str | Position | None) -> Position | None:
    """A bad position is refused at the call, not at the first update."""
    from .changes import Position

    return Position.parse(after) if isinstance(after, str) else after


def _root(root: UUID | str | None) -> UUID | None:
    return None if root is None else parse_uuid(root, "root")
