"""The run side: a tracked task's ``run`` is wrapped (when Celery builds its tracer) so that a
canceled task is skipped before its body runs and every outcome is recorded by the process that
ran it."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from celery import Task
from celery.exceptions import Ignore, Reject, Retry

from ... import messages
from ...events import TaskEvent
from ...exceptions import TaskCanceledException
from ...failurelog import FailureLog
from ...lifecycle import Lifecycle
from ...tracking import TrackSpec
from .._install import Installed
from .compat import spec_of
from .tasks import QUEUE, signature_target

log = logging.getLogger(__name__)
_drain_failures = FailureLog(log, "writing task outcomes")

#: What Celery's ``Task.replace()`` raises ``Ignore`` with.
REPLACED = "Replaced by new task"


class Runner:
    """Records the runs of one app's tracked tasks."""

    def __init__(self, installed: Installed) -> None:
        self.installed = installed

    def instrument(self, task: Task) -> None:
        """Wrap a tracked task's ``run`` (once) so its runs are recorded."""
        if getattr(task, "_taskstatus_instrumented", False):
            return
        spec = spec_of(task)
        if spec is None:
            return
        original = task.run
        runner = self

        @functools.wraps(original)
        def run(*args: Any, **kwargs: Any) -> Any:
            return runner.run(task, spec, original, args, kwargs)

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
            signature_target(task), args, kwargs, task_name=task.name, partial=True
        )
        lifecycle = self.installed.lifecycle
        event = info.event(
            request.id, queue=QUEUE, task_class=task.name, attempt=(request.retries or 0) + 1
        )
        try:
            return run_body(lifecycle, event, request, original, args, kwargs)
        finally:
            if task.acks_late and not request.is_eager:
                # The message is acknowledged once this returns: write the outcome first, so
                # that a worker killed right after the ack cannot lose it.
                try:
                    lifecycle.drain(ended_only=True)
                except Exception:
                    _drain_failures.failed("could not write task %s yet; will retry", request.id)
                else:
                    _drain_failures.succeeded()


def run_body(
    lifecycle: Lifecycle,
    event: TaskEvent,
    request: Any,
    original: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Run the task's body between its start and its end, whichever way it ends."""
    try:
        live = lifecycle.start(event)
    except TaskCanceledException:
        lifecycle.end(event, exception=TaskCanceledException("canceled before it started"))
        raise Ignore() from None
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
