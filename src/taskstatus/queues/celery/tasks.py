"""What every part of the adapter reads from a Celery task: the signature its calls are
described by, and the event a call publishes."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from celery import Task

from ...events import TaskEvent
from ...tracking import PublishInfo

QUEUE = "celery"
#: Header of a message sent again because the store could not record its start: the
#: attempt (``retries``) it repeats and how often it was deferred. Its status exists already.
DEFERRED_HEADER = "taskstatus_deferred"


def deferred_again(headers: Mapping[str, Any]) -> bool:
    """Whether a message is one sent again for want of the store, not a new task or retry
    (the header stays in the headers of later retries, which count the next attempt)."""
    mark = headers.get(DEFERRED_HEADER)
    return isinstance(mark, dict) and mark.get("retries") == (headers.get("retries") or 0)


def signature_target(task: Task) -> Callable[..., Any]:
    """The task's own function as a callable with the call's signature (no ``self``);
    looked up once per task object."""
    target = task.__dict__.get("_taskstatus_target")
    if target is None:
        run = inspect.getattr_static(type(task), "run")
        target = task._taskstatus_target = run.__get__(task, type(task))
    return target  # type: ignore[no-any-return]


def task_event(task_id: str, task: Task, info: PublishInfo, parent: str | None) -> TaskEvent:
    return info.event(
        task_id,
        queue=QUEUE,
        task_class=task.name,
        parent_task_id=parent,
        # acks_late: a message whose worker died goes back to the queue.
        redeliver_on_loss=bool(task.acks_late or task.app.conf.task_acks_late),
    )
