"""Canvases as containers: a chain, group or chord becomes a status whose children are its
steps, recorded when the canvas is published, before a worker sends the later steps."""

from __future__ import annotations

import contextvars
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from celery import Celery, Task
from celery.canvas import _chord as celery_chord
from celery.canvas import group as celery_group

from ...events import CARRIER_KEY
from ...lifecycle import Lifecycle
from ...tracking import PublishInfo
from .._install import Installed
from .compat import spec_of
from .maps import MAPS, describe_map
from .tasks import QUEUE, signature_target, task_event

#: Message header naming a canvas's container (``apply_async(headers={...: "Nightly"})``).
NAME_HEADER = "taskstatus_name"
#: django-user-tasks' way to name a container: a keyword argument of the first task.
NAME_KWARG = "user_task_name"


class _PreviousResult:
    """Stands for the argument a chain step or chord body receives from before it."""

    def __repr__(self) -> str:
        return "<previous result>"

    __str__ = __repr__


PREVIOUS_RESULT = _PreviousResult()


@dataclass
class GroupScope:
    """A ``group.apply_async`` call in progress: its messages join one container."""

    outer: GroupScope | None
    name: str | None = None
    container: str | None = None
    #: Owner of the group's recorded container (a group step of a chain), for its members.
    owner: str | None = None


group_in_flight: contextvars.ContextVar[GroupScope | None] = contextvars.ContextVar(
    "taskstatus_celery_group", default=None
)

#: An eager chain being applied: its head's task id and the later steps, as a message's
#: ``chain`` embed would carry them.
eager_chain: contextvars.ContextVar[tuple[str, list[dict[str, Any]]] | None] = (
    contextvars.ContextVar("taskstatus_celery_eager_chain", default=None)
)


class Canvas:
    """Records one app's canvases: their containers, and the steps that workers send later."""

    def __init__(self, app: Celery, installed: Installed) -> None:
        self.app = app
        self.installed = installed

    def _task(self, name: str) -> Task | None:
        return self.app.tasks.get(name)

    def is_tracked_sig(self, sig: Mapping[str, Any]) -> bool:
        if sig.get("task") in ("celery.chord", "celery.group"):
            return True
        task = self._task(sig.get("task", ""))
        return task is not None and spec_of(task) is not None

    def first_owner(self, steps: Sequence[Mapping[str, Any]]) -> str | None:
        for sig in steps:
            described = self._describe_step(sig, None)
            if described is not None and described[1].user_id is not None:
                return described[1].user_id
        return None

    def _describe_step(
        self, sig: Mapping[str, Any], owner: str | None
    ) -> tuple[Task, PublishInfo] | None:
        """A tracked step that a worker will send later, described from its signature."""
        task = self._task(sig.get("task", ""))
        spec = spec_of(task) if task is not None else None
        if spec is None or task is None:
            return None
        args = tuple(sig.get("args") or ())
        if not sig.get("immutable"):
            # Celery will call the step with the previous result first.
            args = (PREVIOUS_RESULT, *args)
        info = spec.describe(
            signature_target(task),
            args,
            sig.get("kwargs") or {},
            task_name=task.name,
            partial=True,
            default_owner=owner,
        )
        return task, info

    def container(
        self,
        lifecycle: Lifecycle,
        task_id: str,
        kind: str,
        name: str | None,
        owner: str | None,
        parent: str | None,
        *,
        sealed: bool = True,
    ) -> None:
        lifecycle.publish_container(
            task_id,
            queue=QUEUE,
            kind=kind,
            name=name,
            user_id=owner,
            parent_task_id=parent,
            sealed=sealed,
            # A chain's steps, and a chord's header then its body, run one after another; a
            # group's members side by side.
            sequential=kind != "celery.group",
        )

    def parent_for(
        self,
        lifecycle: Lifecycle,
        headers: Mapping[str, Any],
        chord_body: Mapping[str, Any] | None,
        scope: GroupScope | None,
        owner: str | None,
        name_hint: str | None,
    ) -> str | None:
        """The container of a message's top node: its group (inside a chord), or none."""
        if scope is None and headers.get("group") is None:
            return None
        if scope is None:  # a group sent without group.apply_async: no end of sending known
            gid = f"celery.group:{headers['group']}"
            self.container(lifecycle, gid, "celery.group", name_hint, owner, None)
            return gid
        return self._open_scope(lifecycle, scope, headers, chord_body, owner, name_hint)

    def _open_scope(
        self,
        lifecycle: Lifecycle,
        scope: GroupScope,
        headers: Mapping[str, Any],
        chord_body: Mapping[str, Any] | None,
        owner: str | None,
        name_hint: str | None,
    ) -> str:
        if scope.container is not None:
            return scope.container
        outer = (
            self._open_scope(lifecycle, scope.outer, {}, None, owner, None) if scope.outer else None
        )
        gid = headers.get("group") or uuid.uuid4().hex
        scope.container = f"celery.group:{gid}"
        parent = outer
        if chord_body is not None:
            body_id = chord_body["options"]["task_id"]
            chord_id = f"celery.chord:{body_id}"
            self.container(
                lifecycle, chord_id, "celery.chord", scope.name or name_hint, owner, outer
            )
            parent = chord_id
            self.container(
                lifecycle,
                scope.container,
                "celery.group",
                "celery.group",
                owner,
                parent,
                sealed=False,
            )
            self.record_step(lifecycle, chord_body, chord_id, owner)
        else:
            self.container(
                lifecycle,
                scope.container,
                "celery.group",
                scope.name or name_hint,
                owner,
                parent,
                sealed=False,
            )
        return scope.container

    def record_step(
        self, lifecycle: Lifecycle, sig: Mapping[str, Any], parent: str | None, owner: str | None
    ) -> None:
        """A canvas step that will be sent later (by a worker): record it as Pending now."""
        kind = sig.get("task", "")
        options = sig.get("options") or {}
        if kind == "celery.chord":
            body = (sig.get("kwargs") or {}).get("body") or {}
            body_id = (body.get("options") or {}).get("task_id")
            if body_id:
                self.container(
                    lifecycle, f"celery.chord:{body_id}", "celery.chord", None, owner, parent
                )
            return
        if kind == "celery.group":
            if options.get("task_id"):
                self.container(
                    lifecycle,
                    f"celery.group:{options['task_id']}",
                    "celery.group",
                    None,
                    owner,
                    parent,
                    sealed=False,
                )
            return
        described = self._describe_step(sig, owner)
        if described is not None and options.get("task_id"):
            task, info = described
            event = task_event(options["task_id"], task, info, parent)
            lifecycle.publish(event)
            if event.carrier:  # the headers of the message a worker sends for it later
                headers = options.setdefault("headers", {})
                headers[CARRIER_KEY] = event.carrier

    def check_owners(self, sig: Any, partial_args: tuple[Any, ...]) -> None:
        """Raise TypeError if a tracked task that ``sig`` sends first lacks its owner."""
        tasks = getattr(sig, "tasks", None)
        if isinstance(sig, celery_group):
            for member in tasks or ():
                self.check_owners(member, partial_args)
        elif tasks:  # a chain: its first task; the later steps may take the chain's owner
            self.check_owners(tasks[0], partial_args)
        elif getattr(sig, "task", None) in MAPS:  # a chunk: every item
            describe_map(self.app, sig.task, sig.kwargs, None)
        elif getattr(sig, "task", None) in self.app.tasks and not isinstance(sig, celery_chord):
            task = self.app.tasks[sig.task]
            spec = spec_of(task)
            if spec is not None:
                args = tuple(sig.args) if sig.immutable else (*partial_args, *sig.args)
                spec.describe(signature_target(task), args, sig.kwargs, task_name=task.name)

    def recorded_owner(self, sig: Any) -> str | None:
        """The owner of a group recorded as a step of its chain (its members may take it)."""
        group_id = sig.id or (sig.options or {}).get("task_id")
        if not group_id:
            return None
        status = self.installed.lifecycle.find(f"celery.group:{group_id}")
        return status.user_id if status is not None else None

    @contextmanager
    def group_scope(
        self, headers: Mapping[str, Any] | None, owner: str | None = None
    ) -> Iterator[None]:
        scope = GroupScope(
            outer=group_in_flight.get(), name=(headers or {}).get(NAME_HEADER), owner=owner
        )
        token = group_in_flight.set(scope)
        try:
            yield
        finally:
            group_in_flight.reset(token)
            if scope.container is not None:
                self.installed.lifecycle.seal(scope.container)
