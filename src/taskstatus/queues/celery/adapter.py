"""``CeleryAdapter``: one installed app, made of its publish, canvas, run and worker-signal
parts; also the taskstatus plugin that revokes canceled tasks."""

from __future__ import annotations

import functools
import logging
from typing import Any

from celery import Celery

from ...events import TaskEvent
from ...hookspecs import hookimpl
from ...lifecycle import Lifecycle
from ...tracker import Tracker
from .._install import Installed
from .canvas import Canvas
from .producers import HELD, HeldSend
from .publish import Publisher
from .run import Runner
from .signals import WorkerSignals
from .tasks import QUEUE

log = logging.getLogger(__name__)

#: The adapter of each installed app, by the app's ``id()``.
adapters: dict[int, CeleryAdapter] = {}


def adapter_for(app: Any) -> CeleryAdapter | None:
    if app is None:
        return None
    unwrap = getattr(app, "_get_current_object", None)  # celery.current_app is a proxy
    return adapters.get(id(unwrap() if unwrap is not None else app))


class CeleryAdapter(Installed):
    """The Celery side of one app; also a taskstatus plugin (revokes canceled tasks)."""

    def __init__(self, app: Celery, tracker: Tracker | None) -> None:
        self.app = app
        self._tracker = tracker
        self.runner = Runner(self)
        self.canvas = Canvas(app, self)
        self.publisher = Publisher(app, self, self.canvas, self.runner)
        self.signals = WorkerSignals(app, self)

    def connect(self) -> None:
        amqp = self.app.amqp
        original_send = amqp.send_task_message

        @functools.wraps(original_send)
        def send_task_message(producer: Any, name: str, message: Any, **options: Any) -> Any:
            # What is recorded for a message that the broker then refuses ends at once.
            with Lifecycle.sending():
                if not self.publisher.before_send(name, message, options.get("headers")):
                    return original_send(producer, name, message, **options)
                send = HeldSend(self.app, original_send, producer, name, message, options)
                sent = Lifecycle.deliver(send, HELD)
                if sent is HELD:  # inside a batch: sent once its records are written
                    send.hold()
                    return None
                return sent

        amqp.send_task_message = send_task_message
        self.signals.connect()
        self.register_with_tracker()

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
