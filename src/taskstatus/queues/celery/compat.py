"""django-user-tasks' task API: tasks tracked by subclassing rather than by
``@taskstatus.track``, and the one place that tells the two apart."""

from __future__ import annotations

from typing import Any

from celery import Task

from ...tracking import LiveStatus, TrackSpec, current, find_spec
from .tasks import signature_target


class UserTaskMixin:
    """django-user-tasks' mixin: subclasses are tracked without ``@taskstatus.track``.

    Override :meth:`generate_name` and :meth:`calculate_total_steps`; the owner is the
    ``user_id`` argument; ``self.status`` is the running task's live status.
    """

    name: str

    @property
    def status(self) -> LiveStatus:
        return current()

    @classmethod
    def generate_name(cls, arguments_dict: dict[str, Any]) -> str:
        """The status name for a call; by default the task's name."""
        return str(getattr(cls, "name", None) or cls.__name__)

    @classmethod
    def calculate_total_steps(cls, arguments_dict: dict[str, Any]) -> int:
        """The total steps for a call; by default 1."""
        return 1

    def arguments_as_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The call's arguments by parameter name."""
        return TrackSpec().arguments(signature_target(self), args, kwargs)


class UserTask(UserTaskMixin, Task):  # type: ignore[misc]
    """Base class for tracked tasks: ``@app.task(base=UserTask, bind=True)``."""

    abstract = True


def spec_of(task: Any) -> TrackSpec | None:
    """How ``task`` is tracked: by its ``UserTaskMixin`` methods, else by
    ``@taskstatus.track``; None if it is not tracked."""
    if isinstance(task, UserTaskMixin):
        return TrackSpec(
            name=task.generate_name,
            total_steps=task.calculate_total_steps,
            user_arg="user_id",
        )
    wrapped = getattr(task, "__wrapped__", None)
    return find_spec(task, wrapped, getattr(task, "_orig_run", None), getattr(task, "run", None))
