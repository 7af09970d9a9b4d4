"""Drive the lifecycle the way a queue adapter does, without a queue."""

from __future__ import annotations

import uuid
from typing import Any

from taskstatus import TaskEvent, TaskStatus, Tracker


def publish(
    tracker: Tracker,
    task_id: str | None = None,
    *,
    user_id: str | None = "7",
    parent: str | None = None,
    total_steps: int = 1,
    name: str | None = None,
    container: str | None = None,
    sealed: bool = True,
    sequential: bool = False,
) -> TaskStatus:
    """Publish a task (or a container of kind ``container``, ``sequential`` as its adapter
    declares it) and return its status."""
    task_id = task_id or f"task-{uuid.uuid4().hex[:12]}"
    tracker.lifecycle.publish(
        TaskEvent(
            task_id=task_id,
            queue="test",
            task_class=container or "tests.task",
            name=name or task_id,
            user_id=user_id,
            parent_task_id=parent,
            is_container=container is not None,
            sealed=sealed,
            total_steps=total_steps,
            sequential=sequential,
        )
    )
    return tracker.get_by_task_id(task_id)


def event(task_id: str, **fields: Any) -> TaskEvent:
    return TaskEvent(task_id=task_id, queue="test", task_class="tests.task", **fields)


def state(tracker: Tracker, task_id: str) -> str:
    return tracker.get_by_task_id(task_id).state.value
