"""What is patched in Celery itself, once per process, for what no signal tells: each patch
finds the installed adapter of the app concerned and leaves other apps untouched."""

from __future__ import annotations

import functools
import sys
import threading
import uuid
from typing import Any

import celery.app.trace as celery_trace
import celery.worker.consumer.consumer as celery_consumer
from celery import Task
from celery.canvas import Signature
from celery.canvas import _chain as celery_chain
from celery.canvas import group as celery_group

from ...lifecycle import Lifecycle
from .adapter import adapter_for
from .canvas import eager_chain
from .producers import lending
from .retry import retrying

_patch_lock = threading.Lock()


def patch_celery() -> None:
    """Apply every patch, once per process."""
    with _patch_lock:
        if getattr(celery_trace.build_tracer, "taskstatus_patched", False):
            return
        _patch_build_tracer()
        _patch_group_apply_async()
        _patch_task_apply()
        _patch_task_retry()
        _patch_chain_apply()


def _patch_build_tracer() -> None:
    """Every pool and ``apply()`` build a task's tracer before running it: instrument the
    task there."""
    original_build = celery_trace.build_tracer

    @functools.wraps(original_build)
    def build_tracer(name: str, task: Task, *args: Any, **kwargs: Any) -> Any:
        adapter = adapter_for(getattr(task, "_app", None) or getattr(task, "app", None))
        if adapter is not None:
            adapter.runner.instrument(task)
        return original_build(name, task, *args, **kwargs)

    build_tracer.taskstatus_patched = True  # type: ignore[attr-defined]
    celery_trace.build_tracer = build_tracer
    celery_consumer.build_tracer = build_tracer  # imported by name there


def _patch_group_apply_async() -> None:
    """Only ``group.apply_async`` (which also sends a chord's header and ``chunks``) knows
    when a group has sent all its members, so that its container may end. Its members are
    recorded with one write, in a batch, before the first of them is sent."""
    original_apply = celery_group.apply_async

    @functools.wraps(original_apply)
    def apply_async(self: celery_group, *args: Any, **kwargs: Any) -> Any:
        adapter = adapter_for(self.app)
        if adapter is None:
            return original_apply(self, *args, **kwargs)
        recorded = adapter.canvas.recorded_owner(self)
        if recorded is None:
            # Every member's owner before the first member is sent: all or nothing.
            adapter.canvas.check_owners(self, tuple(args[0]) if args and args[0] else ())
        scope = adapter.canvas.group_scope(kwargs.get("headers"), recorded)
        if self.app.conf.task_always_eager:  # each member runs here, once recorded
            with scope:
                return original_apply(self, *args, **kwargs)
        # The container is sealed (scope) once the batch is written; the members go out
        # with the group's producer, held until they are sent.
        positional = len(args) > 3  # (args, kwargs, add_to_parent, producer, ...)
        given = args[3] if positional else kwargs.pop("producer", None)
        with lending(self.app, given) as producer:
            if positional:
                args = (*args[:3], producer, *args[4:])
            else:
                kwargs["producer"] = producer
            with scope, Lifecycle.batch():
                return original_apply(self, *args, **kwargs)

    celery_group.apply_async = apply_async


def _patch_task_apply() -> None:
    """Eager runs (task_always_eager, ``apply()``) send no message: record them as if they
    had."""
    original_task_apply = Task.apply

    @functools.wraps(original_task_apply)
    def task_apply(
        self: Task, args: Any = None, kwargs: Any = None, *rest: Any, **options: Any
    ) -> Any:
        adapter = adapter_for(getattr(self, "_app", None) or getattr(self, "app", None))
        if adapter is not None and not rest and not options.get("retries"):
            options["task_id"] = options.get("task_id") or uuid.uuid4().hex
            adapter.publisher.before_eager_run(self, args, kwargs, options)
        return original_task_apply(self, args, kwargs, *rest, **options)

    Task.apply = task_apply


def _patch_task_retry() -> None:
    """The retry message is sent from inside ``Task.retry()``, which alone knows its
    exception."""
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
        token = retrying.set((cause, sys._getframe(1)))
        try:
            return original_retry(self, args, kwargs, exc, *rest, **options)
        finally:
            retrying.reset(token)

    Task.retry = task_retry


def _patch_chain_apply() -> None:
    """An eager chain sends no message: give its steps ids first, as a published chain has
    them, so that the head's record can list the later steps."""
    original_chain_apply = celery_chain.apply

    @functools.wraps(original_chain_apply)
    def chain_apply(self: celery_chain, *args: Any, **kwargs: Any) -> Any:
        if adapter_for(self.app) is None:
            return original_chain_apply(self, *args, **kwargs)
        copy = self.clone()
        for step in copy.tasks:
            if type(step) is Signature and not step.options.get("task_id"):
                step.set(task_id=uuid.uuid4().hex)
        head, later = copy.tasks[0], copy.tasks[1:]
        token = eager_chain.set(
            (head.options.get("task_id"), [dict(step) for step in reversed(later)])
        )
        try:
            return original_chain_apply(copy, *args, **kwargs)
        finally:
            eager_chain.reset(token)

    celery_chain.apply = chain_apply
