"""Worker signals: a worker process batches its writes from start to stop, and the worker's
main process reports the ends a pool child could not report itself (lost worker, hard time
limit, revoked)."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, signals
from celery.exceptions import TimeLimitExceeded, WorkerLostError

from ... import messages
from ...events import TaskEvent
from ...exceptions import TaskCanceledException
from .._install import Installed
from .compat import spec_of
from .tasks import QUEUE

log = logging.getLogger(__name__)


class WorkerSignals:
    """Celery's worker signals, for one app's tracked tasks."""

    def __init__(self, app: Celery, installed: Installed) -> None:
        self.app = app
        self.installed = installed

    def connect(self) -> None:
        signals.task_failure.connect(self._on_failure, weak=False)
        signals.task_revoked.connect(self._on_revoked, weak=False)
        signals.worker_init.connect(self._on_worker_init, weak=False)
        # A prefork child leaves through os._exit right after worker_process_shutdown.
        signals.worker_process_shutdown.connect(self._on_shutdown, weak=False)
        signals.worker_shutdown.connect(self._on_shutdown, weak=False)

    # -- worker life cycle ---------------------------------------------------------------------
    def _on_worker_init(self, sender: Any = None, **_: Any) -> None:
        """A worker of this app starts: batch its task starts and successes (its pool
        children inherit this) and reap lost tasks (here only, not in its pool children)."""
        if getattr(sender, "app", None) is self.app:
            self.installed.lifecycle.worker_started()

    def _on_shutdown(self, **_: Any) -> None:
        """A worker (or pool) process stops: write what it has queued."""
        try:
            self.installed.lifecycle.drain()
        except Exception:
            log.exception("taskstatus could not write the task events queued by this worker")

    # -- main-process signals ----------------------------------------------------------------
    def _owns(self, sender: Any) -> bool:
        app = getattr(sender, "_app", None) or getattr(sender, "app", None)
        return app is self.app and spec_of(sender) is not None

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
        self.installed.lifecycle.end(event, exception=exception, message=message)

    def _on_revoked(self, sender: Any = None, request: Any = None, **_: Any) -> None:
        task_id = getattr(request, "id", None)
        if task_id is None or not self._owns(sender):
            return
        self.installed.lifecycle.end(
            TaskEvent(task_id=task_id, queue=QUEUE, task_class=sender.name),
            exception=TaskCanceledException("revoked"),
        )
