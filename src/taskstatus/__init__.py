"""taskstatus: status, progress, cancellation and artifacts of user-triggered background tasks,
the same way on Celery, Dramatiq and RQ, stored in the database you choose.

The module-level functions work on the default tracker, made by :func:`configure` (or, on
first use, from the ``TASKSTATUS_*`` environment variables).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from . import plugins as _plugins
from .events import TaskEvent
from .exceptions import (
    ConfigurationError,
    NotFound,
    SchemaOutdated,
    StoreError,
    StoreUnavailable,
    TaskCanceledException,
    TaskStatusError,
)
from .hookspecs import hookimpl, hookspec
from .lifecycle import Lifecycle
from .models import Artifact, Attempt, State, TaskStatus
from .settings import Settings, unknown_setting
from .store import ANY, StatusQuery, Store
from .tracker import Tracker
from .tracking import LiveStatus, TrackSpec, current, track

__version__ = "0.1.0.dev0"

__all__ = [
    "ANY",
    "Artifact",
    "Attempt",
    "ConfigurationError",
    "LiveStatus",
    "NotFound",
    "SchemaOutdated",
    "Settings",
    "State",
    "StatusQuery",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "TaskCanceledException",
    "TaskEvent",
    "TaskStatus",
    "TaskStatusError",
    "TrackSpec",
    "Tracker",
    "batch",
    "cancel",
    "configure",
    "current",
    "delete",
    "get",
    "get_by_task_id",
    "get_tracker",
    "group",
    "hookimpl",
    "hookspec",
    "purge",
    "set_tracker",
    "statuses",
    "track",
]

#: The default tracker; read it with get_tracker(), replace it with set_tracker().
_default: Tracker | None = None
_default_lock = threading.Lock()


def configure(
    url: str | None = None, *, plugins: Iterable[object] = (), **settings: Any
) -> Tracker:
    """Set up the default tracker and connect to its store; returns the Tracker.

    ``url`` and the other ``settings`` (any field of :class:`Settings`) default to their
    ``TASKSTATUS_*`` environment variables, then to the defaults; ``url`` to
    ``sqlite:///taskstatus.db``. An empty database gets the schema now; an outdated one raises
    :class:`SchemaOutdated`.
    """
    if "environ" in settings:  # Settings.load's, not a setting
        raise TypeError(unknown_setting("environ"))
    tracker = Tracker(Settings.load(url=url, **settings), plugins=plugins)
    tracker.open()
    previous = set_tracker(tracker)
    if previous is not None:
        previous.close()
    return tracker


def get_tracker() -> Tracker:
    """The default tracker, configured from the environment on first use."""
    if _default is None:
        with _default_lock:
            if _default is None:
                _swap(Tracker(Settings.load()).open())
    assert _default is not None
    return _default


def set_tracker(tracker: Tracker | None) -> Tracker | None:
    """Make ``tracker`` the default that the module functions and queue adapters use (None:
    configure one from the environment on next use); returns the previous default, left
    open (unlike :func:`configure`, which closes it)."""
    with _default_lock:
        return _swap(tracker)


def _swap(tracker: Tracker | None) -> Tracker | None:
    """Replace the default tracker (holding ``_default_lock``); returns the previous one."""
    global _default
    previous, _default = _default, tracker
    # Plugins that queue adapters register from now on join the new default too.
    _plugins.follow(tracker.pm if tracker is not None else None)
    return previous


def get(uuid: UUID | str) -> TaskStatus:
    """The status with this public id; raises :class:`NotFound`."""
    return get_tracker().get(uuid)


def get_by_task_id(task_id: str) -> TaskStatus:
    """The status of the queue's task id; raises :class:`NotFound`."""
    return get_tracker().get_by_task_id(task_id)


def statuses(
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
) -> list[TaskStatus]:
    """Statuses newest first. ``parent=None``: top level only; omitted: no filter; see
    :meth:`Tracker.query` for ``state`` (one or several) and ``after`` (keyset paging)."""
    return get_tracker().statuses(
        user_id=user_id,
        state=state,
        search=search,
        parent=parent,
        created_after=created_after,
        created_before=created_before,
        limit=limit,
        offset=offset,
        queue=queue,
        task_class=task_class,
        after=after,
    )


def cancel(uuid: UUID | str, *, terminate: bool = False) -> TaskStatus:
    """Cancel the status with this id (and a container's children)."""
    return get_tracker().cancel(uuid, terminate=terminate)


def delete(uuid: UUID | str) -> None:
    """Delete the status with this id, its children, artifacts and files."""
    get_tracker().delete(uuid)


def purge(older_than: timedelta | None = None) -> int:
    """Delete finished statuses older than ``older_than`` (default: max_age); returns count."""
    return get_tracker().purge(older_than)


def group(name: str, *, user_id: object) -> AbstractContextManager[TaskStatus]:
    """``with taskstatus.group("Nightly import", user_id=7):`` — tasks published inside the
    block become children of one container status."""
    return get_tracker().group(name, user_id=user_id)


def batch() -> AbstractContextManager[None]:
    """``with taskstatus.batch():`` — the tasks published inside the block, on any queue, are
    recorded with one write when it ends, and only then are their messages sent. Publishing
    many tasks this way costs one INSERT instead of one per task; the messages leave at the
    end of the block, not at each ``delay()``/``send()``/``enqueue()``. If the records cannot
    be written, nothing is sent and the store's error is raised."""
    return Lifecycle.batch()
