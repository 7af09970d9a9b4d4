"""Celery adapter: Celery's own events -> taskstatus lifecycle hooks.

``install(app)`` hooks three places, each Celery's narrowest point for its job:

* **publish** — the app's ``amqp.send_task_message``, the one function every message passes
  through (``delay``, ``apply_async``, canvas, retries, chain steps sent by workers). Running in
  the call path, it can refuse a tracked task without its owner (``TypeError``, nothing sent);
  a ``before_task_publish`` receiver could not, as Celery only logs receiver errors. The
  message (protocol 2) says which chain, group or chord a task belongs to.
* **run** — tracked tasks' ``run`` is wrapped when Celery builds the task's tracer (as
  ``build_tracer`` is the one place every pool and ``apply()`` go through), so a canceled task is
  skipped before its body runs and every outcome is recorded in the process that ran it.
* **signals** in the worker's main process for what the pool child cannot report:
  ``task_failure`` for a lost worker or hard time limit, ``task_revoked``.

``group.apply_async`` is wrapped too, only to learn when a group has published all its
children, so that its container may end, and ``Task.retry``, only to learn the exception a
retry was given. Untracked tasks are left untouched.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import sys
import threading
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

from .. import messages
from ..events import TaskEvent
from ..exceptions import TaskCanceledException
from ..hookspecs import hookimpl
from ..tracker import Tracker
from ..tracking import LiveStatus, PublishInfo, TrackSpec, current, find_spec
from ._install import Installed, install_arguments, queue_library

with queue_library("celery"):
    import celery.app.trace as celery_trace
    import celery.worker.consumer.consumer as celery_consumer
    from celery import Celery, Task, signals
    from celery.canvas import Signature
    from celery.canvas import _chain as celery_chain
    from celery.canvas import _chord as celery_chord
    from celery.canvas import group as celery_group
    from celery.exceptions import Ignore, Reject, Retry, TimeLimitExceeded, WorkerLostError

__all__ = ["CeleryAdapter", "UserTask", "UserTaskMixin", "install"]

log = logging.getLogger(__name__)

QUEUE = "celery"
#: Message header naming a canvas's container (``apply_async(headers={...: "Nightly"})``).
NAME_HEADER = "taskstatus_name"
#: What Celery's ``Task.replace()`` raises ``Ignore`` with.
REPLACED = "Replaced by new task"
#: django-user-tasks' way to name a container: a keyword argument of the first task.
NAME_KWARG = "user_task_name"


class _PreviousResult:
    """Stands for the argument a chain step or chord body receives from before it."""

    def __repr__(self) -> str:
        return "<previous result>"

    __str__ = __repr__


PREVIOUS_RESULT = _PreviousResult()

_adapters: dict[int, CeleryAdapter] = {}
_patch_lock = threading.Lock()


def install(
    target: Celery | None = None,
    positional_tracker: Tracker | None = None,
    /,
    *,
    tracker: Tracker | None = None,
    app: Celery | None = None,
) -> CeleryAdapter:
    """Track the ``@taskstatus.track`` tasks (and ``UserTask`` subclasses) of the Celery app
    ``target``; returns its adapter.

    Call it where the app is created, in producers and workers alike. ``tracker`` defaults to
    the one made by ``taskstatus.configure()`` (looked up at each event, so configuring after
    ``install`` is fine). Installing twice returns the same adapter. (``install(app,
    tracker)`` and ``install(app=app)`` still work, with a DeprecationWarning.)
    """
    app, tracker = install_arguments(target, app, "app", positional_tracker, tracker)
    if not isinstance(app, Celery):
        raise TypeError(f"install() takes a Celery app, got {type(app).__name__}")
    existing = _adapters.get(id(app))
    if existing is not None:
        return existing
    adapter = CeleryAdapter(app, tracker)
    _adapters[id(app)] = adapter
    _patch_celery()
    adapter.connect()
    return adapter


def _adapter_for(app: Any) -> CeleryAdapter | None:
    if app is None:
        return None
    unwrap = getattr(app, "_get_current_object", None)  # celery.current_app is a proxy
    return _adapters.get(id(unwrap() if unwrap is not None else app))


# -- the django-user-tasks-compatible task API ---------------------------------------------------
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
        return TrackSpec().arguments(_signature_target(self), args, kwargs)


class UserTask(UserTaskMixin, Task):  # type: ignore[misc]
    """Base class for tracked tasks: ``@app.task(base=UserTask, bind=True)``."""

    abstract = True


def _spec_of(task: Any) -> TrackSpec | None:
    if isinstance(task, UserTaskMixin):
        return TrackSpec(
            name=task.generate_name,
            total_steps=task.calculate_total_steps,
            user_arg="user_id",
        )
    wrapped = getattr(task, "__wrapped__", None)
    return find_spec(task, wrapped, getattr(task, "_orig_run", None), getattr(task, "run", None))


def _task_event(task_id: str, task: Task, info: PublishInfo, parent: str | None) -> TaskEvent:
    return info.event(
        task_id,
        queue=QUEUE,
        task_class=task.name,
        parent_task_id=parent,
        # acks_late: a message whose worker died goes back to the queue.
        redeliver_on_loss=bool(task.acks_late or task.app.conf.task_acks_late),
    )


def _signature_target(task: Task) -> Callable[..., Any]:
    """The task's own function as a callable with the call's signature (no ``self``);
    looked up once per task object."""
    target = task.__dict__.get("_taskstatus_target")
    if target is None:
        run = inspect.getattr_static(type(task), "run")
        target = task._taskstatus_target = run.__get__(task, type(task))
    return target  # type: ignore[no-any-return]


def _running(task_id: str) -> LiveStatus | None:
    """The live status of ``task_id`` if it is the run in progress here."""
    try:
        live = current()
    except RuntimeError:
        return None
    return live if live.task_id == task_id else None


def _retry_traceback(failure: BaseException, caller: FrameType | None) -> str:
    """The traceback of a retry's exception; for one never raised (``retry(exc=...)`` outside
    an ``except`` block), the task's frames down to its ``retry()`` call."""
    if failure.__traceback__ is not None or caller is None:
        return "".join(traceback.format_exception(failure))
    frames = []
    for frame, line in traceback.walk_stack(caller):
        if frame.f_code is CeleryAdapter._run.__code__:
            break
        frames.append((frame, line))
    stack = traceback.StackSummary.extract(reversed(frames))
    lines = ["Traceback (most recent call last):\n", *stack.format()]
    return "".join(lines + traceback.format_exception_only(failure))


# -- containers in flight --------------------------------------------------------------------------
@dataclass
class _GroupScope:
    """A ``group.apply_async`` call in progress: its messages join one container."""

    outer: _GroupScope | None
    name: str | None = None
    container: str | None = None
    #: Owner of the group's recorded container (a group step of a chain), for its members.
    owner: str | None = None


#: An eager chain being applied: its head's task id and the later steps, as a message's
#: ``chain`` embed would carry them.
_eager_chain: contextvars.ContextVar[tuple[str, list[dict[str, Any]]] | None] = (
    contextvars.ContextVar("taskstatus_celery_eager_chain", default=None)
)

_scope: contextvars.ContextVar[_GroupScope | None] = contextvars.ContextVar(
    "taskstatus_celery_group", default=None
)

#: A ``Task.retry()`` call in progress: the exception it was given (or the one being
#: handled) and the frame that called it.
_retrying: contextvars.ContextVar[tuple[BaseException | None, FrameType] | None] = (
    contextvars.ContextVar("taskstatus_celery_retrying", default=None)
)


def _patch_celery() -> None:
    """Wrap ``build_tracer`` and ``group.apply_async`` once per process."""
    with _patch_lock:
        if getattr(celery_trace.build_tracer, "taskstatus_patched", False):
            return
        original_build = celery_trace.build_tracer

        @functools.wraps(original_build)
        def build_tracer(name: str, task: Task, *args: Any, **kwargs: Any) -> Any:
            adapter = _adapter_for(getattr(task, "_app", None) or getattr(task, "app", None))
            if adapter is not None:
                adapter.instrument(task)
            return original_build(name, task, *args, **kwargs)

        build_tracer.taskstatus_patched = True  # type: ignore[attr-defined]
        celery_trace.build_tracer = build_tracer
        celery_consumer.build_tracer = build_tracer  # imported by name there

        original_apply = celery_group.apply_async

        @functools.wraps(original_apply)
        def apply_async(self: celery_group, *args: Any, **kwargs: Any) -> Any:
            adapter = _adapter_for(self.app)
            if adapter is None:
                return original_apply(self, *args, **kwargs)
            recorded = adapter.recorded_owner(self)
            if recorded is None:
                # Every member's owner before the first member is sent: all or nothing.
                adapter.check_owners(self, tuple(args[0]) if args and args[0] else ())
            with adapter.group_scope(kwargs.get("headers"), recorded):
                return original_apply(self, *args, **kwargs)

        celery_group.apply_async = apply_async

        # Eager runs (task_always_eager, apply()) send no message: record them as if they had.
        original_task_apply = Task.apply

        @functools.wraps(original_task_apply)
        def task_apply(
            self: Task, args: Any = None, kwargs: Any = None, *rest: Any, **options: Any
        ) -> Any:
            adapter = _adapter_for(getattr(self, "_app", None) or getattr(self, "app", None))
            if adapter is not None and not rest and not options.get("retries"):
                options["task_id"] = options.get("task_id") or uuid.uuid4().hex
                adapter.before_eager_run(self, args, kwargs, options)
            return original_task_apply(self, args, kwargs, *rest, **options)

        Task.apply = task_apply

        # The retry message is sent from inside Task.retry(), which alone knows its exception.
        original_retry = Task.retry

        @functools.wraps(original_retry)
        def task_retry(
            self: Task,
            args: Any = None,
            kwargs: Any = None,
            exc: Any = None,
            *rest: Any,
            **options: Any,
        ) -> Any:
            cause = exc if isinstance(exc, BaseException) else sys.exc_info()[1]
            token = _retrying.set((cause, sys._getframe(1)))
            try:
                return original_retry(self, args, kwargs, exc, *rest, **options)
            finally:
                _retrying.reset(token)

        Task.retry = task_retry

        original_chain_apply = celery_chain.apply

        @functools.wraps(original_chain_apply)
        def chain_apply(self: celery_chain, *args: Any, **kwargs: Any) -> Any:
            if _adapter_for(self.app) is None:
                return original_chain_apply(self, *args, **kwargs)
            # Ids for every step now, as a published chain has them, so that the head's
            # record can list the later steps.
            copy = self.clone()
            for step in copy.tasks:
                if type(step) is Signature and not step.options.get("task_id"):
                    step.set(task_id=uuid.uuid4().hex)
            head, later = copy.tasks[0], copy.tasks[1:]
            token = _eager_chain.set(
                (head.options.get("task_id"), [dict(step) for step in reversed(later)])
            )
            try:
                return original_chain_apply(copy, *args, **kwargs)
            finally:
                _eager_chain.reset(token)

        celery_chain.apply = chain_apply


class CeleryAdapter(Installed):
    """The Celery side of one app; also a taskstatus plugin (revokes canceled tasks)."""

    def __init__(self, app: Celery, tracker: Tracker | None) -> None:
        self.app = app
        self._tracker = tracker

    def connect(self) -> None:
        amqp = self.app.amqp
        original_send = amqp.send_task_message

        @functools.wraps(original_send)
        def send_task_message(producer: Any, name: str, message: Any, **options: Any) -> Any:
            self.before_send(name, message, options.get("headers"))
            return original_send(producer, name, message, **options)

        amqp.send_task_message = send_task_message
        signals.task_failure.connect(self._on_failure, weak=False)
        signals.task_revoked.connect(self._on_revoked, weak=False)
        signals.worker_init.connect(self._on_worker_init, weak=False)
        # A prefork child leaves through os._exit right after worker_process_shutdown.
        signals.worker_process_shutdown.connect(self._on_shutdown, weak=False)
        signals.worker_shutdown.connect(self._on_shutdown, weak=False)
        self.register_with_tracker()

    # -- publish -----------------------------------------------------------------------------
    def _task(self, name: str) -> Task | None:
        return self.app.tasks.get(name)

    def before_send(self, name: str, message: Any, extra_headers: Mapping[str, Any] | None) -> None:
        headers, _properties, body, _sent_event = message
        if not isinstance(body, tuple):
            log.warning("taskstatus does not track Celery message protocol 1 (task %s)", name)
            return
        args, kwargs, embed = body
        embed = embed or {}
        task_id = headers["id"]
        steps = list(reversed(embed.get("chain") or []))
        chord_body = embed.get("chord")
        scope = _scope.get()
        task = self._task(name)
        spec = _spec_of(task) if task is not None else None
        tracked_steps = [s for s in steps if self._is_tracked_sig(s)]
        if spec is None and not tracked_steps and chord_body is None and scope is None:
            return  # untracked and no tracked canvas around it: untouched
        if task is not None:
            self.instrument(task)
        tracker = self.tracker
        if headers.get("retries"):
            self._record_retry(tracker, task_id, name)
            return
        # Sent from a task (the next step of a chain): what this worker recorded comes first,
        # as the step may run, and end its chain, before the next batch.
        tracker.flush()
        known = bool(steps or chord_body or scope) and (
            tracker.find_by_task_id(task_id) is not None
        )
        if known:
            return  # a chain step recorded when its chain was published
        info = None
        if spec is not None and task is not None:
            try:
                info = spec.describe(
                    _signature_target(task),
                    tuple(args),
                    kwargs,
                    task_name=task.name,
                    default_owner=scope.owner if scope is not None else None,
                )
            except TypeError:
                # A later chain step or chord body may get its owner from the canvas: it was
                # recorded (and checked) when the canvas was published.
                if tracker.find_by_task_id(task_id) is not None:
                    return
                raise
        name_hint = (
            (extra_headers or {}).get(NAME_HEADER)
            or headers.get(NAME_HEADER)
            or kwargs.get(NAME_KWARG)
        )
        owner = info.user_id if info else self._first_owner(steps)
        parent = self._parent_for(tracker, headers, chord_body, scope, owner, name_hint)
        if steps:
            chain_id = f"celery.chain:{task_id}"
            self._container(
                tracker,
                chain_id,
                "celery.chain",
                name_hint or (info.name if info else None),
                owner,
                parent,
            )
            parent = chain_id
        if info is not None and task is not None:
            tracker.publish(_task_event(task_id, task, info, parent))
        for step in steps:
            self._record_step(tracker, step, parent, owner)

    def _record_retry(self, tracker: Tracker, task_id: str, name: str) -> None:
        """Task.retry() sends the next attempt before its run ends: record the retry now,
        before a worker can start that attempt, and after the run's last progress."""
        failure, caller = _retrying.get() or (sys.exc_info()[1], None)
        live = _running(task_id)
        if live is not None:
            live.flush()
        tracker.end(
            TaskEvent(task_id=task_id, queue=QUEUE, task_class=name),
            exception=failure,
            retrying=True,
            traceback=_retry_traceback(failure, caller) if failure else None,
        )

    def before_eager_run(
        self, task: Task, args: Any, kwargs: Any, options: Mapping[str, Any]
    ) -> None:
        """Record a task about to run in this process as if its message were being sent
        (a missing owner raises here, from ``delay()``/``apply()``)."""
        headers = dict(options.get("headers") or {})
        headers["id"] = options["task_id"]
        embed: dict[str, Any] = {}
        chain = _eager_chain.get()
        if chain is not None and chain[0] == headers["id"]:
            embed["chain"] = chain[1]
        body = (tuple(args or ()), dict(kwargs or {}), embed)
        self.before_send(task.name, (headers, {}, body, None), options.get("headers"))

    def _is_tracked_sig(self, sig: Mapping[str, Any]) -> bool:
        if sig.get("task") in ("celery.chord", "celery.group"):
            return True
        task = self._task(sig.get("task", ""))
        return task is not None and _spec_of(task) is not None

    def _first_owner(self, steps: Sequence[Mapping[str, Any]]) -> str | None:
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
        spec = _spec_of(task) if task is not None else None
        if spec is None or task is None:
            return None
        args = tuple(sig.get("args") or ())
        if not sig.get("immutable"):
            # Celery will call the step with the previous result first.
            args = (PREVIOUS_RESULT, *args)
        info = spec.describe(
            _signature_target(task),
            args,
            sig.get("kwargs") or {},
            task_name=task.name,
            partial=True,
            default_owner=owner,
        )
        return task, info

    def _container(
        self,
        tracker: Tracker,
        task_id: str,
        kind: str,
        name: str | None,
        owner: str | None,
        parent: str | None,
        *,
        sealed: bool = True,
    ) -> None:
        tracker.publish_container(
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

    def _parent_for(
        self,
        tracker: Tracker,
        headers: Mapping[str, Any],
        chord_body: Mapping[str, Any] | None,
        scope: _GroupScope | None,
        owner: str | None,
        name_hint: str | None,
    ) -> str | None:
        """The container of a message's top node: its group (inside a chord), or none."""
        if scope is None and headers.get("group") is None:
            return None
        if scope is None:  # a group sent without group.apply_async: no end of sending known
            gid = f"celery.group:{headers['group']}"
            self._container(tracker, gid, "celery.group", name_hint, owner, None)
            return gid
        return self._open_scope(tracker, scope, headers, chord_body, owner, name_hint)

    def _open_scope(
        self,
        tracker: Tracker,
        scope: _GroupScope,
        headers: Mapping[str, Any],
        chord_body: Mapping[str, Any] | None,
        owner: str | None,
        name_hint: str | None,
    ) -> str:
        if scope.container is not None:
            return scope.container
        outer = (
            self._open_scope(tracker, scope.outer, {}, None, owner, None) if scope.outer else None
        )
        gid = headers.get("group") or uuid.uuid4().hex
        scope.container = f"celery.group:{gid}"
        parent = outer
        if chord_body is not None:
            body_id = chord_body["options"]["task_id"]
            chord_id = f"celery.chord:{body_id}"
            self._container(
                tracker, chord_id, "celery.chord", scope.name or name_hint, owner, outer
            )
            parent = chord_id
            self._container(
                tracker,
                scope.container,
                "celery.group",
                "celery.group",
                owner,
                parent,
                sealed=False,
            )
            self._record_step(tracker, chord_body, chord_id, owner)
        else:
            self._container(
                tracker,
                scope.container,
                "celery.group",
                scope.name or name_hint,
                owner,
                parent,
                sealed=False,
            )
        return scope.container

    def _record_step(
        self, tracker: Tracker, sig: Mapping[str, Any], parent: str | None, owner: str | None
    ) -> None:
        """A canvas step that will be sent later (by a worker): record it as Pending now."""
        kind = sig.get("task", "")
        options = sig.get("options") or {}
        if kind == "celery.chord":
            body = (sig.get("kwargs") or {}).get("body") or {}
            body_id = (body.get("options") or {}).get("task_id")
            if body_id:
                self._container(
                    tracker, f"celery.chord:{body_id}", "celery.chord", None, owner, parent
                )
            return
        if kind == "celery.group":
            if options.get("task_id"):
                self._container(
                    tracker,
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
            tracker.publish(_task_event(options["task_id"], task, info, parent))

    def check_owners(self, sig: Any, partial_args: tuple[Any, ...]) -> None:
        """Raise TypeError if a tracked task that ``sig`` sends first lacks its owner."""
        tasks = getattr(sig, "tasks", None)
        if isinstance(sig, celery_group):
            for member in tasks or ():
                self.check_owners(member, partial_args)
        elif tasks:  # a chain: its first task; the later steps may take the chain's owner
            self.check_owners(tasks[0], partial_args)
        elif getattr(sig, "task", None) in self.app.tasks and not isinstance(sig, celery_chord):
            task = self.app.tasks[sig.task]
            spec = _spec_of(task)
            if spec is not None:
                args = tuple(sig.args) if sig.immutable else (*partial_args, *sig.args)
                spec.describe(_signature_target(task), args, sig.kwargs, task_name=task.name)

    def recorded_owner(self, sig: Any) -> str | None:
        """The owner of a group recorded as a step of its chain (its members may take it)."""
        group_id = sig.id or (sig.options or {}).get("task_id")
        if not group_id:
            return None
        status = self.tracker.find_by_task_id(f"celery.group:{group_id}")
        return status.user_id if status is not None else None

    @contextmanager
    def group_scope(
        self, headers: Mapping[str, Any] | None, owner: str | None = None
    ) -> Iterator[None]:
        scope = _GroupScope(outer=_scope.get(), name=(headers or {}).get(NAME_HEADER), owner=owner)
        token = _scope.set(scope)
        try:
            yield
        finally:
            _scope.reset(token)
            if scope.container is not None:
                self.tracker.seal(scope.container)

    # -- run ---------------------------------------------------------------------------------
    def instrument(self, task: Task) -> None:
        """Wrap a tracked task's ``run`` (once) so its runs are recorded."""
        if getattr(task, "_taskstatus_instrumented", False):
            return
        spec = _spec_of(task)
        if spec is None:
            return
        original = task.run
        adapter = self

        @functools.wraps(original)
        def run(*args: Any, **kwargs: Any) -> Any:
            return adapter.run(task, spec, original, args, kwargs)

        task.run = run
        task._taskstatus_instrumented = True

    def run(
        self,
        task: Task,
        spec: TrackSpec,
        original: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        request = task.request
        # Checked when the task was published (or applied eagerly); the status exists.
        info = spec.describe(
            _signature_target(task), args, kwargs, task_name=task.name, partial=True
        )
        tracker = self.tracker
        event = info.event(
            request.id, queue=QUEUE, task_class=task.name, attempt=(request.retries or 0) + 1
        )
        try:
            return self._run(tracker, event, request, original, args, kwargs)
        finally:
            if task.acks_late and not request.is_eager:
                # The message is acknowledged once this returns: write the outcome first, so
                # that a worker killed right after the ack cannot lose it.
                try:
                    tracker.flush(ended_only=True)
                except Exception:
                    log.warning(
                        "could not write task %s yet; will retry", request.id, exc_info=True
                    )

    def _run(
        self,
        tracker: Tracker,
        event: TaskEvent,
        request: Any,
        original: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        try:
            live = tracker.begin(event)
        except TaskCanceledException:
            tracker.end(event, exception=TaskCanceledException("canceled before it started"))
            raise Ignore() from None
        try:
            result = original(*args, **kwargs)
        except Retry as exc:
            if request.is_eager:  # no message was sent, so the retry is not recorded yet
                cause = exc.exc if isinstance(exc.exc, BaseException) else exc
                tracker.end(live, exception=cause, retrying=True)
            else:
                tracker.release(live)  # recorded when the retry message was sent
            raise
        except TaskCanceledException as exc:
            tracker.end(live, exception=exc)
            raise Ignore() from exc
        except Reject as exc:
            if exc.requeue:
                tracker.release(live)  # redelivered: the next run counts an attempt
            else:
                tracker.end(live, exception=exc, message=messages.REJECTED)
            raise
        except Ignore as exc:
            if str(exc) == REPLACED:
                # self.replace(): the replacement runs under the same task id.
                tracker.release(live)
            else:
                tracker.end(live, exception=TaskCanceledException("the task ignored itself"))
            raise
        except BaseException as exc:
            tracker.end(live, exception=exc)
            raise
        tracker.end(live)
        return result

    # -- worker life cycle ---------------------------------------------------------------------
    def _on_worker_init(self, sender: Any = None, **_: Any) -> None:
        """A worker of this app starts: batch its task starts and successes (its pool
        children inherit this)."""
        if getattr(sender, "app", None) is self.app:
            self.tracker.batch_writes()

    def _on_shutdown(self, **_: Any) -> None:
        """A worker (or pool) process stops: write what it has queued."""
        try:
            self.tracker.flush()
        except Exception:
            log.exception("taskstatus could not write the task events queued by this worker")

    # -- main-process signals ----------------------------------------------------------------
    def _owns(self, sender: Any) -> bool:
        app = getattr(sender, "_app", None) or getattr(sender, "app", None)
        return app is self.app and _spec_of(sender) is not None

    def _on_failure(
        self,
        sender: Any = None,
        task_id: str | None = None,
        exception: BaseException | None = None,
        **_: Any,
    ) -> None:
        """The pool child died (lost worker, hard time limit): it could not report itself."""
        if task_id is None or not self._owns(sender):
            return
        if not isinstance(exception, (WorkerLostError, TimeLimitExceeded)):
            return
        event = TaskEvent(task_id=task_id, queue=QUEUE, task_class=sender.name)
        # (With acks_late + reject_on_worker_lost Celery requeues without this signal; the
        # redelivery's start counts the new attempt.)
        message = (
            messages.TIMED_OUT if isinstance(exception, TimeLimitExceeded) else messages.WORKER_LOST
        )
        self.tracker.end(event, exception=exception, message=message)

    def _on_revoked(self, sender: Any = None, request: Any = None, **_: Any) -> None:
        task_id = getattr(request, "id", None)
        if task_id is None or not self._owns(sender):
            return
        self.tracker.end(
            TaskEvent(task_id=task_id, queue=QUEUE, task_class=sender.name),
            exception=TaskCanceledException("revoked"),
        )

    # -- plugin --------------------------------------------------------------------------------
    @hookimpl
    def taskstatus_cancel(self, event: TaskEvent) -> None:
        """Revoke a canceled Celery task so workers discard it (and stop it if asked)."""
        if event.queue != QUEUE or event.is_container or event.exception is not None:
            return
        if event.task_class not in self.app.tasks:
            return
        try:
            self.app.control.revoke(event.task_id, terminate=event.terminate)
        except Exception:
            # The status is canceled anyway; a worker skips the task when it arrives.
            log.warning("could not revoke Celery task %s", event.task_id, exc_info=True)
