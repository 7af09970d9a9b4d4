"""The Tracker: one configured store, plugin manager and artifact storage, and the API over them.

Reads go straight to the store; every change goes through the lifecycle hooks, so plugins see
API calls (``status.cancel()``) exactly like queue events. Queue adapters use
:meth:`Tracker.publish`, :meth:`Tracker.begin` and :meth:`Tracker.end`, which hold the logic
every queue shares (owner check, group membership, outcome of an exception).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import logging
import traceback as traceback_module
import uuid as uuid_module
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, BinaryIO
from uuid import UUID

import pluggy

from . import models
from .artifacts import ArtifactStorage
from .events import TaskEvent
from .exceptions import ConfigurationError, NotFound, TaskCanceledException
from .handoff import HandOff
from .heartbeat import Heartbeat
from .models import Artifact, Attempt, State, TaskStatus, check_artifact_payload, check_steps
from .plugins import make_plugin_manager
from .recorder import Recorder, utcnow
from .settings import Settings
from .store import ANY, AttemptStore, StatusQuery, Store
from .tracking import LiveCalls, LiveStatus, activate, deactivate

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from .changes import Position
    from .feed import Update

__all__ = ["Tracker"]

log = logging.getLogger(__name__)

_group: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "taskstatus_group", default=None
)


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
            self.recorder.beat, self.reap_lost, self.settings.heartbeat_interval
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
        #: Set once prepare_for_fork() has warmed the store up.
        self._forkable = False

    def _store_for(self, url: str) -> Store:
        store = self.pm.hook.taskstatus_store(url=url)
        if store is None:
            scheme = url.partition(":")[0]
            raise ConfigurationError(
                f"unknown store URL scheme {scheme!r} in {url!r}; built in: sqlite, "
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
        if self.recorder.writer is not None:
            self.recorder.writer.stop()
        self.store.close()
        self._forkable = False

    def prepare_for_fork(self) -> None:
        """Get this process ready to fork children that run tasks (a work horse per job).

        The first call opens the store and runs the hot path once with nothing to change, so
        that every child starts with the schema checked and the statements compiled. Each call
        refreshes the ids of tasks canceled before they started, if not recently read: a child
        inherits them and refuses such a task without a query.
        """
        if self.recorder.writer is not None:
            self.recorder.writer.refresh_canceled()
        if self._forkable:
            return
        self._forkable = True
        self.open()
        now = utcnow()
        nobody = uuid_module.uuid4()
        self.store.get_by_task_id(f"taskstatus:warm-up:{nobody}")
        for transition in (models.START, models.SUCCEED, models.RUN):
            self.store.transition(nobody, transition, now)
            self.store.transition_tasks([f"taskstatus:warm-up:{nobody}"], transition, now)
        self.store.add_steps(nobody, 1, 0, now)

    def batch_writes(self) -> None:
        """Queue adapters call this in worker processes: from now on task starts and
        successes are written in batches every ``write_interval`` seconds (see
        :mod:`taskstatus.writebehind`). The adapter must call :meth:`flush` when the process
        shuts down."""
        self.recorder.batch_writes(self.settings.write_interval, self.settings.max_age)

    @property
    def writes_batched(self) -> bool:
        """Whether :meth:`batch_writes` took effect here: starts and successes are queued."""
        return self.recorder.writer is not None

    def after_write(self, callback: Callable[[], object]) -> bool:
        """Call ``callback`` on the writer thread once what is queued so far is stored (how a
        queue adapter acknowledges a message whose success is queued). False, and nothing is
        called, when writes are not batched."""
        writer = self.recorder.writer
        if writer is None:
            return False
        writer.after_write(callback)
        return True

    def run_waiting(self) -> None:
        """Write what is queued and call the callbacks given to :meth:`after_write`, now, on
        this thread (a worker stopping)."""
        if self.recorder.writer is not None:
            self.recorder.writer.run_waiting()

    def flush(self, *, ended_only: bool = False) -> None:
        """Write the task starts and successes this process has queued (reads through the
        tracker do it first). ``ended_only`` writes only those of tasks that ended: what a
        queue adapter must store before the queue acknowledges them."""
        self.recorder.drain(ended_only=ended_only)

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
                status.completed_steps, status.total_steps = sums.get(status.uuid, (0, 0))
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
        if not isinstance(task_id, str) or not task_id:
            raise ValueError(f"task_id must be a non-empty str, got {task_id!r}")
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
        if limit is not None and (type(limit) is not int or limit < 0):
            raise ValueError(f"limit must be a non-negative int or None, got {limit!r}")
        if type(offset) is not int or offset < 0:
            raise ValueError(f"offset must be a non-negative int, got {offset!r}")
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
            if text is not None and not isinstance(text, str):
                raise TypeError(f"{name} must be a str, got {type(text).__name__}")
        states = None
        if state is not None and not isinstance(state, str):
            states = frozenset(State.parse(s) for s in state)
            state = None
        owners = None if user_ids is None else [str(owner) for owner in user_ids]
        if user_id is not None:
            owners = [str(user_id)] if owners is None or str(user_id) in owners else []
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
        if type(limit) is not int or limit < 0:
            raise ValueError(f"limit must be a non-negative int, got {limit!r}")
        if isinstance(after, Artifact):
            if after.created is None:
                raise ValueError("after= needs a stored artifact (its created time)")
            after = (after.created, after.uuid)
        if isinstance(status, TaskStatus):
            status = status.uuid
        found = self.store.artifact_query(
            None if status is None else [parse_uuid(status)],
            None if user_ids is None else [str(owner) for owner in user_ids],
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
        if not isinstance(text, str) or not text:
            raise ValueError(f"set_state() takes a non-empty str, got {text!r}")
        return self._fire("taskstatus_progress", status, name=None, stage=text)

    def set_name(self, status: TaskStatus, name: str) -> TaskStatus:
        if not isinstance(name, str) or not name:
            raise ValueError(f"set_name() takes a non-empty str, got {name!r}")
        return self._fire("taskstatus_progress", status, name=name)

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
        file: bytes | BinaryIO | str | None = None,
        filename: str | None = None,
        url: str | None = None,
        text: str | None = None,
    ) -> Artifact:
        """Attach a file (bytes, binary file object or local path), a URL or a text."""
        if not isinstance(name, str) or not name or len(name) > 255:
            raise ValueError(f"artifact name must be a non-empty str of at most 255, got {name!r}")
        check_artifact_payload(file=file, url=url, text=text, filename=filename)
        status_uuid = status.uuid if isinstance(status, TaskStatus) else status
        now = utcnow()
        artifact = Artifact(
            uuid=uuid_module.uuid4(),
            status_uuid=status_uuid,
            name=name,
            url=url.strip() if url else None,
            text=text,
            created=now,
            modified=now,
        )
        if file is not None:
            artifact.file = self.artifact_storage.save(status_uuid, artifact.uuid, file, filename)
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
        if not isinstance(name, str) or not name:
            raise ValueError(f"group name must be a non-empty str, got {name!r}")
        task_id = f"taskstatus.group:{uuid_module.uuid4()}"
        self.publish(
            TaskEvent(
                task_id=task_id,
                queue="taskstatus",
                task_class="taskstatus.group",
                name=name,
                user_id=str(user_id),
                is_container=True,
                sealed=False,
                total_steps=0,
            )
        )
        token = _group.set(task_id)
        try:
            yield self.get_by_task_id(task_id)
        except BaseException:
            if not self.store.children(self.get_by_task_id(task_id).uuid):
                self.hook.taskstatus_cancel(
                    event=TaskEvent(task_id=task_id, task_class="taskstatus.group")
                )
            raise
        finally:
            _group.reset(token)
            self.seal(task_id)

    # -- for queue adapters --------------------------------------------------------------------
    def seal(self, task_id: str) -> None:
        """No more children will join the container ``task_id``; it ends once they have."""
        self.recorder.seal(task_id)

    def publish(self, event: TaskEvent) -> None:
        """Record a task about to be sent (inside an open ``group`` it joins the group)."""
        if event.parent_task_id is None and (group := _group.get()) is not None:
            event = _replace(event, parent_task_id=group)
        self.hook.taskstatus_publish(event=event)

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

    def cancel_task(self, event: TaskEvent) -> None:
        """Cancel the task of ``event`` (by its task id) that its queue will not run, as
        :meth:`cancel` does a status: queue adapters drop its work too."""
        self.hook.taskstatus_cancel(event=event)

    def begin(self, event: TaskEvent) -> LiveStatus:
        """A worker starts the task: record it and make ``current()`` return its handle.

        Raises :class:`~taskstatus.TaskCanceledException` when the status was canceled: the
        adapter must then skip the task body (and call :meth:`end` with that exception).
        """
        self.hook.taskstatus_prerun(event=event)
        live = LiveStatus(self._live_calls, event, interval=self.settings.progress_interval)
        live.token = activate(live)
        self.heartbeat.add(event.task_id)
        if self.settings.progress_interval:  # else every progress call writes at once
            self.heartbeat.watch(live)
        return live

    def release(self, live: LiveStatus, *, succeeded: bool = False) -> None:
        """The run stopped without an outcome (its message goes back to the queue): write
        its progress and clear ``current()``; the next delivery counts a new attempt.
        ``succeeded``: the success is written next, which completes every step anyway."""
        try:
            live.flush(final=True, succeeding=succeeded)
        finally:
            self.heartbeat.unwatch(live)
            self.heartbeat.discard(live.task_id)
            if live.token is not None:
                deactivate(live.token)
                live.token = None

    # -- a run handed to a forked child (see taskstatus.handoff) ------------------------------
    def hand_off(self, event: TaskEvent) -> HandOff:
        """In a worker, just before it forks a child to run the task of ``event``: nothing is
        written yet; this process vouches for the task's heartbeat, and writes its start if
        the child still runs after ``write_interval``. Call :meth:`finish_hand_off` once the
        child has ended."""
        self.prepare_for_fork()
        writer = self.recorder.writer
        handoff = HandOff(event, self.recorder.clock(), deferred=writer is not None)
        self.heartbeat.add(event.task_id)
        if writer is not None:
            handoff.start_call = writer.call_later(
                writer.interval,
                lambda: self.recorder.start_unless_changed(handoff.event, handoff.since),
            )
        return handoff

    def take_over(self, handoff: HandOff) -> LiveStatus:
        """In the child: :meth:`begin` the task handed off, its start written only before
        this process's first other write. Raises TaskCanceledException as :meth:`begin`."""
        if not handoff.deferred:
            return self.begin(handoff.event)
        event = handoff.event
        writer = self.recorder.writer
        # As the worker read them just before the fork (see prepare_for_fork): no query here.
        if writer is not None and writer.canceled_unstarted(event.task_id, refresh=False):
            raise TaskCanceledException(f"task {event.task_id} was canceled before it started")
        self.recorder.defer_start(event, handoff.since)
        self.hook.taskstatus_prerun(event=event)
        # No heartbeat here: the worker keeps it (see hand_off). The thread that writes
        # pending progress starts at the task's first progress call, if any.
        live = LiveStatus(
            self._live_calls, event, interval=self.settings.progress_interval, watched=False
        )
        live.token = activate(live)
        return live

    def hand_back(self, handoff: HandOff, live: LiveStatus) -> None:
        """In the child, once the task succeeded: write its pending progress and leave the
        success to the parent, which writes it in its next batch (with the start, as one
        write, if that was never written)."""
        if not handoff.deferred:
            self.end(live)
            return
        ended = self.recorder.clock()
        self.release(live, succeeded=True)
        unstarted = self.recorder.withdraw_start()
        handoff.report(HandOff.SUCCEEDED_UNSTARTED if unstarted else HandOff.SUCCEEDED, ended)

    def finish_hand_off(self, handoff: HandOff) -> None:
        """In the worker, once the child has ended: write the success it handed back. Any
        other outcome the child wrote itself, or the adapter ends the task with :meth:`end`
        (a child that died)."""
        event = handoff.event
        self.heartbeat.discard(event.task_id)
        writer = self.recorder.writer
        # Taken back unless it ran: the start is then this process's to write.
        start_pending = (
            writer is not None
            and handoff.start_call is not None
            and writer.cancel_call(handoff.start_call)
        )
        outcome = handoff.outcome()
        if outcome == HandOff.NOTHING:
            return
        if outcome == HandOff.SUCCEEDED_UNSTARTED and start_pending:
            assert writer is not None
            # Checked for a cancel in the child; a later cancel wins in the write itself,
            # which the success joins into one.
            writer.start(event, handoff.since, check_canceled=False)
        self.hook.taskstatus_succeed(event=_replace(event, at=handoff.ended()))

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
        retried (``retrying``, with or without an exception) or failed; pending progress is
        written first."""
        if isinstance(task, LiveStatus):
            self.release(task, succeeded=exception is None and not retrying)
            event = task._event()
        else:
            event = task
        if exception is None and not retrying:
            self.hook.taskstatus_succeed(event=event)
            return
        if isinstance(exception, TaskCanceledException):
            self.hook.taskstatus_cancel(event=_replace(event, exception=exception))
            return
        if traceback is None and exception is not None:
            traceback = "".join(traceback_module.format_exception(exception))
        hook = self.hook.taskstatus_retry if retrying else self.hook.taskstatus_fail
        hook(event=_replace(event, exception=exception, message=message, traceback=traceback))


def _position(after: str | Position | None) -> Position | None:
    """A bad position is refused at the call, not at the first update."""
    from .changes import Position

    return Position.parse(after) if isinstance(after, str) else after


def _root(root: UUID | str | None) -> UUID | None:
    return None if root is None else parse_uuid(root, "root")


def _replace(event: TaskEvent, **changes: Any) -> TaskEvent:
    return dataclasses.replace(event, **changes)
