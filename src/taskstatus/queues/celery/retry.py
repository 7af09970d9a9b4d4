"""Retries: ``Task.retry()`` sends the next attempt before its run ends, so the retry is
recorded as that message is sent, with the exception the (patched) ``retry()`` was given."""

from __future__ import annotations

import contextvars
import sys
import traceback
from types import FrameType

from ...events import TaskEvent
from ...lifecycle import Lifecycle
from ...tracking import LiveStatus, current
from .run import run_body
from .tasks import QUEUE

#: A ``Task.retry()`` call in progress: the exception it was given (or the one being
#: handled) and the frame that called it.
retrying: contextvars.ContextVar[tuple[BaseException | None, FrameType] | None] = (
    contextvars.ContextVar("taskstatus_celery_retrying", default=None)
)


def record_retry(lifecycle: Lifecycle, task_id: str, name: str) -> None:
    """Record the retry before a worker can start the next attempt, and after the run's
    last progress."""
    failure, caller = retrying.get() or (sys.exc_info()[1], None)
    live = _running(task_id)
    if live is not None:
        live.flush()
    lifecycle.end(
        TaskEvent(task_id=task_id, queue=QUEUE, task_class=name),
        exception=failure,
        retrying=True,
        traceback=_retry_traceback(failure, caller) if failure else None,
    )


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
        if frame.f_code is run_body.__code__:
            break
        frames.append((frame, line))
    stack = traceback.StackSummary.extract(reversed(frames))
    lines = ["Traceback (most recent call last):\n", *stack.format()]
    return "".join(lines + traceback.format_exception_only(failure))
