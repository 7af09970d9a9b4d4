"""The lifecycle contract: pluggy hook specifications of the project ``taskstatus``.

Queue adapters call ``pm.hook.taskstatus_<event>(event=...)``; the recorder plugin turns each
call into a state-machine transition; any other plugin (notifications, metrics, mirrors) may
implement the same hooks with ``@taskstatus.hookimpl``. Lifecycle hooks are called with keyword
arguments only, as pluggy requires.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .events import TaskEvent
    from .models import TaskStatus
    from .store import Store

PROJECT = "taskstatus"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def taskstatus_publish(event: TaskEvent) -> None:
    """A task (or container) is about to be sent to its queue.

    Runs in the caller before the message leaves; the status exists as Pending afterwards.
    An exception raised here stops the publish.
    """


@hookspec
def taskstatus_prerun(event: TaskEvent) -> None:
    """A worker is about to run the task (first run, retry or redelivery).

    The recorder raises :class:`~taskstatus.TaskCanceledException` when the status was
    canceled: the adapter must then skip the task body.
    """


@hookspec
def taskstatus_postrun(event: TaskEvent) -> None:
    """The run that ``taskstatus_prerun`` announced in this process is over, whatever its
    outcome; ``event`` is the prerun's.

    Fires after the outcome's hook where this process reports the outcome, and also where it
    does not: the message went back to the queue, or another process writes the outcome (an
    RQ work horse hands its success to its worker). So prerun and postrun pair up in one
    process, for what measures a run there: timers, a gauge of running tasks, a trace span.
    """


@hookspec
def taskstatus_progress(event: TaskEvent) -> None:
    """The running task reported progress: completed/total steps to add, a stage or a name.

    Coalesced: called at most every ``progress_interval`` and before the task ends. The
    recorder raises :class:`~taskstatus.TaskCanceledException` once cancel was requested.
    """


@hookspec
def taskstatus_retry(event: TaskEvent) -> None:
    """The task failed and the queue will run it again."""


@hookspec
def taskstatus_fail(event: TaskEvent) -> None:
    """The task failed for good; ``event.message`` is shown to its owner."""


@hookspec
def taskstatus_succeed(event: TaskEvent) -> None:
    """The task finished successfully."""


@hookspec
def taskstatus_cancel(event: TaskEvent) -> None:
    """Cancellation was requested, or the task stopped by raising TaskCanceledException.

    Adapters implement it to revoke queued work (and stop running work when
    ``event.terminate``).
    """


@hookspec
def taskstatus_stopped(status: TaskStatus) -> None:
    """A status reached a terminal state. Fires exactly once per status."""


@hookspec(firstresult=True)
def taskstatus_store(url: str) -> Store | None:
    """Return a Store for ``url`` if this plugin knows its scheme, else None."""


@hookspec(firstresult=True)
def taskstatus_permission(principal: Any, action: str, status: TaskStatus) -> bool | None:
    """Decide whether ``principal`` may ``action`` (view, cancel, delete, change) ``status``.

    Return True or False to decide, None to leave it to the next plugin and finally to the
    default rule: a superuser, or the owner, may; ``view`` also whoever lists the owner's
    statuses (:func:`taskstatus_visible_owners`).
    """


@hookspec(firstresult=True)
def taskstatus_visible_owners(principal: Any) -> Sequence[str] | bool | None:
    """The owners whose statuses ``principal`` may list: their ids, True for every owner.

    Lists are filtered by it in the database query, so a page is never cut short. Return None
    to leave it to the next plugin and finally to the default: every owner for a superuser,
    else the principal's own id.
    """
