"""Drive the lifecycle the way a queue adapter does, without a queue."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

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


@contextlib.contextmanager
def sql_statements(engine: sa.Engine) -> Iterator[dict[str, list[int]]]:
    """What the engine sends in the block: ``insert``, the rows each INSERT of statuses wrote
    (a multi-row statement or an executemany is one entry); ``select``, one entry a SELECT."""
    seen: dict[str, list[int]] = {"insert": [], "select": []}

    def note(conn, cursor, statement, parameters, context, executemany):
        text = statement.lstrip().upper()
        if text.startswith("INSERT INTO TASKSTATUS_STATUS"):
            seen["insert"].append(cursor.rowcount)
        elif text.startswith("SELECT"):
            seen["select"].append(1)

    sa.event.listen(engine, "after_cursor_execute", note)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "after_cursor_execute", note)
