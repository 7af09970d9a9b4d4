"""The run side: a tracked task's ``run`` is wrapped (when Celery builds its tracer) so that a
canceled task is skipped before its body runs and every outcome is recorded by the process that
ran it."""

from __future__ import annotations

import functools
import inspect
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from celery import Task
from celery.exceptions import Ignore, Reject, Retry
from celery.local import Proxy

from ... import messages
from ...events import CARRIER_KEY
from ...exceptions import TaskCanceledException
from ...lifecycle import Lifecycle
from ...tracking import LiveStatus, PublishInfo
from .._install import Installed
from .compat import spec_of
from .maps import MAPS, describe_map
from .tasks import DEFERRED_HEADER, QUEUE, signature_target

log = logging.getLogger(__name__)

#: What Celery's ``Task.replace()`` raises ``Ignore`` with.
REPLACED = "Replaced by new task"

#: With ``acks_late``: how often this process put back each run it deferred (by task id), as a
#: rejected message carries no count of its own.
_rejections: OrderedDict[str, int] = OrderedDict()
_rejections_lock = threading.Lock()


class Runner:
    """Records the runs of one app's tracked tasks."""

    def __init__(self, installed: Installed) -> None:
        self.installed = installed

    def instrument(self, task: Task) -> None:
        """Wrap a tracked task's ``run`` (once) so its runs are recorded; a map's too, which
        is tracked when the task it maps is."""
        if getattr(task, "_taskstatus_instrumented", False):
            return
        spec = spec_of(task)
        if spec is None and task.name not in MAPS:
            return
        # What every run reads, read once (through a proxy, each read is a lookup).
        if isinstance(task, Proxy):
            task = task._get_current_object()
        original = task.run
        name = task.name
        target = signature_target(task)
        runner = self

        @functools.wraps(original)
        def run(*args: Any, **kwargs: Any) -> Any:
            request = task.request
            if request.id is None:
                # Called as a function (an item of a map, a call in another task's body):
                # no message, no status of its own; it reports to the run it is part of.
                return original(*args, **kwargs)
            if spec is None:
                return runner.run_map(task, request, original, args, kwargs)
            # Checked when the task was published (or applied eagerly); the status exists.
            info = spec.describe(target, args, kwargs, task_name=name, partial=True)
            return runner.run(task, request, info, name, original, args, kwargs)

        task.run = run
        task._taskstatus_instrumented = True

    def run_map(
        self,
        task: Task,
        request: Any,
        original: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """A map's run, tracked if the task it maps is."""
        called = inspect.signature(original).bind(*args, **kwargs).arguments
        mapped = describe_map(task.app, task.name, called, None, partial=True)
        if mapped is None:
            return original(*args, **kwargs)
        mapped_task, info = mapped
        return self.run(task, request, info, mapped_task.name, original, args, kwargs)

    def run(
        self,
        task: Task,
        request: Any,
        info: PublishInfo,
        task_class: str,
        original: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """Record the run of ``task`` (its ``request``) whose call ``info`` describes."""
        lifecycle = self.installed.lifecycle
        event = info.event(
            request.id,
            queue=QUEUE,
            task_class=task_class,
            attempt=(request.retries or 0) + 1,
            carrier=dict(getattr(request, CARRIER_KEY, None) or {}),
        )
        try:
            live = lifecycle.start(event)
        except TaskCanceledException:
            lifecycle.end(event, exception=TaskCanceledException("canceled before it started"))
            raise Ignore() from None
        except Exception as exc:
            if request.is_eager:
                raise
            _defer(lifecycle, task, exc)
            raise
        try:
            return run_body(lifecycle, live, request, original, args, kwargs)
        finally:
            if task.acks_late and not request.is_eager:
                # The message is acknowledged once this returns: store the outcome first, so
                # that a worker killed before it is stored leaves the message to come again.
                lifecycle.store_ended(f"task {request.id}")


def _defer(lifecycle: Lifecycle, task: Task, exc: Exception) -> None:
    """The store could not record the start: put the message back for later (raises Reject
    or Ignore) instead of running the task untracked; returns if ``exc`` is another error.

    With ``acks_late`` the message is still held: wait, then reject it to the queue. Otherwise
    it was acknowledged already: send it again (same id, arguments and options, the same
    attempt) with a countdown, marked so that the publish side does not record it again."""
    request = task.request
    if task.acks_late:
        with _rejections_lock:
            deferrals = _rejections.pop(request.id, 0)
            _rejections[request.id] = deferrals + 1
            if len(_rejections) > 10_000:
                _rejections.popitem(last=False)
    else:
        deferrals = int((request.headers or {}).get(DEFERRED_HEADER, {}).get("deferrals", 0))
    delay = lifecycle.deferral(exc, deferrals, held=task.acks_late)
    if delay is None:
        return
    log.warning(
        "taskstatus cannot record the start of task %s (%s); delivering it again in %.1f s",
        request.id,
        exc,
        delay,
    )
    if task.acks_late:
        time.sleep(delay)
        raise Reject(exc, requeue=True) from exc
    headers = dict(request.headers or {})
    headers[DEFERRED_HEADER] = {"retries": request.retries or 0, "deferrals": deferrals + 1}
    task.signature_from_request(request, countdown=delay, headers=headers).apply_async()
    raise Ignore() from exc


def run_body(
    lifecycle: Lifecycle,
    live: LiveStatus,
    request: Any,
    original: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Run the task's body once started (``live``) until its end, whichever way it ends."""
    try:
        result = original(*args, **kwargs)
    except Retry as exc:
        if request.is_eager:  # no message was sent, so the retry is not recorded yet
            cause = exc.exc if isinstance(exc.exc, BaseException) else exc
            lifecycle.end(live, exception=cause, retrying=True)
        else:
            lifecycle.release(live)  # recorded when the retry message was sent
        raise
    except TaskCanceledException as exc:
        lifecycle.end(live, exception=exc)
        raise Ignore() from exc
    except Reject as exc:
        if exc.requeue:
            lifecycle.release(live)  # redelivered: the next run counts an attempt
        else:
            lifecycle.end(live, exception=exc, message=messages.REJECTED)
        raise
    except Ignore as exc:
        if str(exc) == REPLACED:
            # self.replace(): the replacement runs under the same task id.
            lifecycle.release(live)
        else:
            lifecycle.end(live, exception=TaskCanceledException("the task ignored itself"))
        raise
    except BaseException as exc:
        lifecycle.end(live, exception=exc)
        raise
    lifecycle.end(live)
    return result
