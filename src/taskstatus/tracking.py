"""The task side: ``@track``, the running task's live handle and ``current()``.

``track`` only attaches a :class:`TrackSpec` to the task; queue adapters find it at publish
and at run time. While a tracked task runs, :func:`current` returns its :class:`LiveStatus`,
which coalesces progress in memory and writes it at most every ``progress_interval`` seconds
(and always before the task ends), checking for a cancel request at the same cadence.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar
from uuid import UUID

from .events import TaskEvent
from .exceptions import NotFound, StoreError, TaskCanceledException
from .failurelog import FailureLog
from .models import MAX_STEPS, MAX_TEXT, Artifact, TaskStatus, check_steps, check_text, clean_text

if TYPE_CHECKING:
    from .store import TaskKey

__all__ = ["LiveCalls", "LiveStatus", "PublishInfo", "TrackSpec", "current", "find_spec", "track"]

log = logging.getLogger(__name__)
_progress_failures = FailureLog(log, "writing progress")

SPEC_ATTRIBUTE = "__taskstatus__"
T = TypeVar("T")

NameSpec = str | Callable[[dict[str, Any]], str] | None
StepsSpec = int | Callable[[dict[str, Any]], int]


@dataclass(frozen=True)
class PublishInfo:
    """What a tracked call looks like to taskstatus: computed once, at publish."""

    name: str
    total_steps: int
    user_id: str | None
    arguments: dict[str, Any]

    def event(
        self,
        task_id: str,
        *,
        queue: str,
        task_class: str,
        parent_task_id: str | None = None,
        redeliver_on_loss: bool = False,
        attempt: int = 1,
        carrier: dict[str, str] | None = None,
    ) -> TaskEvent:
        """The publish (or start) event of this call (``carrier``: what its message
        carried, for a start)."""
        return TaskEvent(
            task_id=task_id,
            queue=queue,
            task_class=task_class,
            name=self.name,
            arguments=self.arguments,
            user_id=self.user_id,
            parent_task_id=parent_task_id,
            total_steps=self.total_steps,
            redeliver_on_loss=redeliver_on_loss,
            attempt=attempt,
            carrier={} if carrier is None else carrier,
        )


@dataclass(frozen=True)
class TrackSpec:
    """How to name, size and attribute one tracked task."""

    name: NameSpec = None
    total_steps: StepsSpec = 1
    user_arg: str = "user_id"

    def __post_init__(self) -> None:
        if isinstance(self.total_steps, int):  # checked once here, not at every describe()
            check_steps(self.total_steps, "total_steps")

    def arguments(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        *,
        skip_first: bool = False,
        partial: bool = False,
    ) -> dict[str, Any]:
        """The call's arguments by parameter name (django-user-tasks' ``arguments_as_dict``).

        ``partial`` accepts a call that still lacks arguments (a chain step whose first
        argument is the previous step's result).
        """
        binder = _binder(func, skip_first)
        arguments = binder.simple_arguments(args, kwargs, partial)
        if arguments is not None:
            return arguments
        signature = binder.signature
        try:
            bound = (
                signature.bind_partial(*args, **kwargs)
                if partial
                else signature.bind(*args, **kwargs)
            )
        except TypeError as exc:
            raise TypeError(f"{qualified_name(func)}(): {exc}") from None
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        for param in signature.parameters.values():
            if param.kind is inspect.Parameter.VAR_KEYWORD:
                arguments.update(arguments.pop(param.name, {}))
        return arguments

    def describe(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        *,
        skip_first: bool = False,
        task_name: str | None = None,
        partial: bool = False,
        default_owner: str | None = None,
    ) -> PublishInfo:
        """Name, total steps and owner of a call; ``TypeError`` when the owner is missing.

        With ``partial`` (a call whose arguments are not all known yet) nothing is required:
        the owner falls back to ``default_owner`` and name and steps to their defaults.
        """
        arguments = self.arguments(func, args, kwargs, skip_first=skip_first, partial=partial)
        task_name = task_name or qualified_name(func)
        owner = arguments.get(self.user_arg)
        if owner is None or (isinstance(owner, str) and not owner.strip()):
            owner = default_owner
        if owner is None and not partial:
            raise TypeError(
                f"{task_name}: the owner argument {self.user_arg!r} is missing or empty; a "
                f"tracked task must be called with it (or name another one with "
                f"track(user_arg=...)); nothing was sent"
            )
        try:
            # A worker describes every run: the plain cases without a call.
            name = task_name if self.name is None else self.render_name(arguments, task_name)
            steps = self.total_steps
            total = steps if type(steps) is int else self.render_total_steps(arguments)
        except (KeyError, IndexError, TypeError, ValueError):
            if not partial:
                raise
            name, total = task_name, 1
        return PublishInfo(
            name=name,
            total_steps=total,
            user_id=None if owner is None else str(owner),
            arguments=arguments,
        )

    def render_name(self, arguments: dict[str, Any], default: str) -> str:
        if self.name is None:
            return default
        if callable(self.name):
            name = self.name(arguments)
        else:
            try:
                name = self.name.format(**arguments)
            except (KeyError, IndexError) as exc:
                raise ValueError(
                    f"name template {self.name!r} uses {exc} which is not an argument of the "
                    f"task (arguments: {', '.join(arguments) or 'none'})"
                ) from None
        if not isinstance(name, str):
            raise TypeError(f"task name must be a str, got {type(name).__name__}")
        return clean_text(name, MAX_TEXT)

    def render_total_steps(self, arguments: dict[str, Any]) -> int:
        total = self.total_steps(arguments) if callable(self.total_steps) else self.total_steps
        return check_steps(total, "total_steps")


class _Binder:
    """Binds calls to one signature.

    A worker binds every run of a task, and ``inspect``'s general binding costs more than the
    rest of tracking a trivial task. So a call to plain positional-or-keyword parameters (nearly
    every task) is bound here by position and name; anything else — other kinds of
    parameters, or a call that does not fit — goes through ``inspect``, which also words the
    errors.
    """

    def __init__(self, signature: inspect.Signature) -> None:
        self.signature = signature
        params = signature.parameters.values()
        plain = all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params)
        self._names = tuple(signature.parameters) if plain else None
        self._defaults = {p.name: p.default for p in params if p.default is not p.empty}

    def simple_arguments(
        self, args: tuple[Any, ...], kwargs: Mapping[str, Any], partial: bool
    ) -> dict[str, Any] | None:
        """The arguments by name with defaults applied, or None: bind with inspect."""
        names = self._names
        if names is None or len(args) > len(names):
            return None
        given = dict(zip(names, args, strict=False))  # fewer args than names: keywords, defaults
        for key, value in kwargs.items():
            if key in given or key not in self.signature.parameters:
                return None
            given[key] = value
        defaults = self._defaults
        if not partial and any(n not in given and n not in defaults for n in names):
            return None
        return {
            name: given[name] if name in given else defaults[name]
            for name in names
            if name in given or name in defaults
        }


def _binder(func: Callable[..., Any], skip_first: bool) -> _Binder:
    """The binder of a callable, made once: a worker binds every call of a task to it."""
    try:
        hash(func)
    except TypeError:
        return _make_binder(func, skip_first)
    return _cached_binder(func, skip_first)


def _make_binder(func: Callable[..., Any], skip_first: bool) -> _Binder:
    signature = inspect.signature(func)
    if skip_first:
        params = list(signature.parameters.values())[1:]
        signature = signature.replace(parameters=params)
    return _Binder(signature)


_cached_binder = functools.lru_cache(maxsize=1024)(_make_binder)


def track(
    name: NameSpec = None, *, total_steps: StepsSpec = 1, user_arg: str = "user_id"
) -> Callable[[T], T]:
    """Mark a task as tracked; works above or below the queue's own decorator.

    ``name`` is a ``str.format`` template over the call's arguments or a callable taking the
    arguments dict; ``total_steps`` an int or such a callable; ``user_arg`` the argument that
    names the owner, required at publish.
    """
    if name is not None and not (isinstance(name, str) or callable(name)):
        raise TypeError(f"track(name=...) takes a str template or a callable, got {name!r}")
    if not (callable(total_steps) or isinstance(total_steps, int)):
        raise TypeError(f"track(total_steps=...) takes an int or a callable, got {total_steps!r}")
    if not isinstance(user_arg, str) or not user_arg.isidentifier():
        raise ValueError(f"track(user_arg=...) must name an argument, got {user_arg!r}")
    spec = TrackSpec(name=name, total_steps=total_steps, user_arg=user_arg)

    def mark(task: T) -> T:
        setattr(task, SPEC_ATTRIBUTE, spec)
        return task

    return mark


def find_spec(*candidates: object) -> TrackSpec | None:
    """The TrackSpec attached to any of ``candidates`` (a task object, its function...)."""
    for candidate in candidates:
        spec = getattr(candidate, SPEC_ATTRIBUTE, None)
        if isinstance(spec, TrackSpec):
            return spec
    return None


def qualified_name(func: Callable[..., Any]) -> str:
    """``module.qualname`` of a function: the ``task_class`` of its statuses."""
    module = getattr(func, "__module__", None)
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))
    return f"{module}.{name}" if module else str(name)


# -- the running task ----------------------------------------------------------------------------
_current: contextvars.ContextVar[LiveStatus | None] = contextvars.ContextVar(
    "taskstatus_current", default=None
)


def current() -> LiveStatus:
    """The live status of the tracked task running in this thread/context."""
    live = _current.get()
    if live is None:
        raise RuntimeError("taskstatus.current() is only available inside a running tracked task")
    return live


@dataclass(frozen=True)
class LiveCalls:
    """What a live status calls, given once by the tracker that starts its tasks (so this
    module needs no tracker)."""

    #: The ``taskstatus_progress`` hook: ``progress(event=...)``.
    progress: Callable[..., object]
    #: Identity of a task's status, None when it has none.
    key: Callable[[str], TaskKey | None]
    #: A fresh read of the status with this uuid.
    read: Callable[[UUID], TaskStatus]
    #: The tracker's ``add_artifact(uuid, *, name, file, filename, url, text)``.
    add_artifact: Callable[..., Artifact]
    #: Have the heartbeat thread write what a status leaves pending.
    watch: Callable[[LiveStatus], None]


class LiveStatus:
    """Handle of a running task's status with coalesced, cancel-aware progress.

    ``increment_completed_steps`` costs a counter addition and a clock read; the database sees
    at most one write per ``progress_interval``. What a task leaves pending when it goes
    quiet (a stage set before a long call) is written by the process's heartbeat thread once
    the interval has passed. Once cancel was requested, the next write raises
    :class:`~taskstatus.TaskCanceledException` and so does every later call.

    The task's thread only ever adds to the counters and replaces the stage; a write (on
    either thread, one at a time) sends what differs from what was last written. So the hot
    path takes no lock, and a count is neither lost nor sent twice.
    """

    def __init__(
        self, calls: LiveCalls, event: TaskEvent, *, interval: float, watched: bool = True
    ) -> None:
        """``interval``: seconds between progress writes (0: each call writes at once)."""
        self._calls = calls
        self._uuid: UUID | None = None
        #: The event the run started with (``taskstatus_postrun`` gets it).
        self.started_with = event
        self.task_id = event.task_id
        self.queue = event.queue
        self.task_class = event.task_class
        self._interval = interval
        self._begun = time.monotonic()
        #: Counted by the task since it began, and its latest stage, a new tuple per call:
        #: each call is a write to make, and a chance to notice a cancel (only the task's
        #: thread changes them)...
        self._completed = 0
        self._total = 0
        self._stage: tuple[str] | None = None
        #: ... and what of them was last written.
        self._written: tuple[int, int, tuple[str] | None] = (0, 0, None)
        #: Held by the thread that writes; guards _written, _done and _canceled.
        self._lock = threading.Lock()
        self._done = False
        self._canceled = False
        #: Without the heartbeat thread watching, the first call asks for it (see _due).
        self._watched = watched or not self._interval
        self._deadline = float("-inf") if not self._watched else self._begun + self._interval
        #: Set while this handle is what ``current()`` returns.
        self.token: contextvars.Token[LiveStatus | None] | None = None

    # -- hot path ------------------------------------------------------------------------------
    def increment_completed_steps(self, steps: int = 1) -> None:
        if type(steps) is not int or not 0 <= steps <= MAX_STEPS:
            check_steps(steps, "steps")
        self._completed += steps
        if time.monotonic() >= self._deadline:
            self._due()

    def increment_total_steps(self, steps: int) -> None:
        if type(steps) is not int or not 0 <= steps <= MAX_STEPS:
            check_steps(steps, "steps")
        self._total += steps
        if time.monotonic() >= self._deadline:
            self._due()

    def set_state(self, text: str) -> None:
        """Show a custom stage ("Sending emails"); the state stays In Progress. Text no store
        keeps alike is replaced (see :func:`~taskstatus.models.clean_text`), not refused."""
        self._stage = (check_text(text, "set_state() text"),)
        if time.monotonic() >= self._deadline:
            self._due()

    def _due(self) -> None:
        """The interval has passed: write. In a process that started no heartbeat thread
        for this task (a work horse), the first call starts it instead, so that a task that
        never reports progress costs no thread."""
        if not self._watched:
            self._watched = True
            self._deadline = self._begun + self._interval
            self._calls.watch(self)
            if time.monotonic() < self._deadline:
                return
        self.flush(final=False)

    def check_canceled(self) -> None:
        """Raise TaskCanceledException now if cancel was requested (one read)."""
        self.flush(final=False, force=True)

    # -- writes --------------------------------------------------------------------------------
    def set_name(self, name: str) -> None:
        """Rename the task and its containers (written at once)."""
        name = check_text(name, "set_name() name")
        self.flush(final=False, force=True)
        self._calls.progress(event=self._event(name=name))

    def add_artifact(
        self,
        *,
        name: str = "Output",
        file: bytes | BinaryIO | None = None,
        filename: str | None = None,
        url: str | None = None,
        text: str | None = None,
        path: str | os.PathLike[str] | None = None,
    ) -> Artifact:
        return self._calls.add_artifact(
            self.uuid, name=name, file=file, filename=filename, url=url, text=text, path=path
        )

    def flush(self, *, final: bool = True, force: bool = False, succeeding: bool = False) -> None:
        """Write what was counted since the last write. ``final`` re-raises store errors,
        and no write follows (the run is over). ``succeeding``: the task's success is written
        next, which completes its steps and clears its stage, so only added total steps are
        still worth a write."""
        with self._lock:
            if self._canceled and not final:
                raise TaskCanceledException(f"task {self.task_id} was canceled")
            self._done = self._done or final
            if succeeding and self._total == self._written[1]:
                self._written = (self._completed, self._total, self._stage)
            self._write(final=final, force=force)

    @property
    def deadline(self) -> float:
        """The monotonic time from which what the task counts is written."""
        return self._deadline

    def write_pending(self, now: float) -> float:
        """On the heartbeat thread: write what the task left pending once the interval has
        passed since the last write. Returns the monotonic time to look again."""
        if now < self._deadline:
            return self._deadline
        if not self._lock.acquire(blocking=False):
            return now + self._interval  # the task's thread is writing
        try:
            if self._done or self._canceled:
                return float("inf")
            completed, total, stage = self._written
            if (self._completed, self._total) == (completed, total) and self._stage is stage:
                # Nothing pending: the task's next call writes at once, itself.
                return now + self._interval
            with contextlib.suppress(TaskCanceledException):
                self._write(final=False, force=False)  # the task's next call raises it
            return self._deadline
        finally:
            self._lock.release()

    def _write(self, *, final: bool, force: bool) -> None:
        """Write what changed since the last write; the caller holds ``_lock``."""
        self._deadline = time.monotonic() + self._interval
        counted = (self._completed, self._total, self._stage)
        written_completed, written_total, written_stage = self._written
        # The store caps each counter at MAX_STEPS: so is what one write adds.
        completed = min(counted[0] - written_completed, MAX_STEPS)
        total = min(counted[1] - written_total, MAX_STEPS)
        stage = counted[2][0] if counted[2] is not written_stage and counted[2] else None
        if not (completed or total or stage or force):
            return
        try:
            self._calls.progress(
                event=self._event(completed_delta=completed, total_delta=total, stage=stage)
            )
        except TaskCanceledException:
            self._canceled = True
            self._deadline = float("-inf")  # every later call raises without a query
            if not final:
                raise
        except StoreError:
            # Keep the counts for the next write; a lost status must be loud at the end.
            if final:
                raise
            _progress_failures.failed(
                "could not write progress of task %s; will retry", self.task_id
            )
        else:
            self._written = counted
            _progress_failures.succeeded()

    def _event(self, **fields: Any) -> TaskEvent:
        started = self.started_with
        return TaskEvent(
            task_id=self.task_id,
            queue=self.queue,
            task_class=self.task_class,
            attempt=started.attempt,
            carrier=started.carrier,
            **fields,
        )

    @property
    def uuid(self) -> UUID:
        """The status's public id (looked up once: the worker may not have written the
        task's start yet)."""
        if self._uuid is None:
            key = self._calls.key(self.task_id)
            if key is None:
                raise NotFound(f"no task status with task_id {self.task_id!r}")
            self._uuid = key.uuid
        return self._uuid

    @property
    def status(self) -> TaskStatus:
        """A fresh read of the status (one query)."""
        return self._calls.read(self.uuid)

    def __repr__(self) -> str:
        return f"<LiveStatus {self.task_id}>"


def activate(live: LiveStatus | None) -> contextvars.Token[LiveStatus | None]:
    return _current.set(live)


def deactivate(token: contextvars.Token[LiveStatus | None]) -> None:
    try:
        _current.reset(token)
    except ValueError:
        # Reset from another context (a queue calling the end hook elsewhere): just clear.
        _current.set(None)
