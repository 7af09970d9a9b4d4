"""What every part of the adapter reads from a Celery task: the signature its calls are
described by, and the event a call publishes."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from celery import Task

from ...events import TaskEvent
from ...tracking import PublishInfo

QUEUE = "celery"


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
