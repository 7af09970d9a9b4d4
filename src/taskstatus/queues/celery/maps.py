"""Maps: a ``celery.starmap`` or ``celery.map`` message (each chunk of ``task.chunks()``,
``task.starmap()``, ``task.map()``) calls a task once per item, in one run. A map of a
tracked task is tracked as one task: its status is the map's, owned by the owner its items
name, with the steps of all its items; each item's progress counts toward it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from celery import Celery, Task

from ...tracking import PublishInfo
from .compat import spec_of
from .tasks import signature_target

#: The builtin tasks that call a task once per item of a list.
MAPS = frozenset({"celery.starmap", "celery.map"})


def describe_map(
    app: Celery, name: str, kwargs: Mapping[str, Any], owner: str | None, *, partial: bool = False
) -> tuple[Task, PublishInfo] | None:
    """The task a map calls and how the map is tracked, or None if that task is untracked.
    Every item must name its owner (TypeError, as for the task itself), unless ``partial``
    (a map that runs, checked when sent) or the map's canvas gives one (``owner``)."""
    task = app.tasks.get((kwargs.get("task") or {}).get("task", ""))
    spec = spec_of(task) if task is not None else None
    if spec is None or task is None:
        return None
    target = signature_target(task)
    items = [
        spec.describe(
            target,
            tuple(item) if name == "celery.starmap" else (item,),
            {},
            task_name=task.name,
            partial=partial,
            default_owner=owner,
        )
        for item in kwargs.get("it") or ()
    ]
    first = items[0] if items else None
    return task, PublishInfo(
        name=(first.name if len(items) < 2 else f"{first.name} (and {len(items) - 1} more)")
        if first is not None
        else task.name,
        total_steps=sum(item.total_steps for item in items),
        user_id=first.user_id if first is not None else owner,
        arguments={},
    )
