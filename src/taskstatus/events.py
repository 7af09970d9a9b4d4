"""The event object every lifecycle hook receives."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["CARRIER_KEY", "TaskEvent"]

#: Where adapters put :attr:`TaskEvent.carrier` in a message: a Celery message header, a
#: Dramatiq message option, an RQ job's meta key.
CARRIER_KEY = "taskstatus_carrier"


@dataclass(frozen=True)
class TaskEvent:
    """What happened to one task (or container), as an adapter or the API saw it.

    Adapters fill what their queue knows; fields that an event does not use keep their
    defaults. ``task_id`` is the queue's id and the key of every transition.
    """

    task_id: str
    #: ``celery``, ``dramatiq``, ``rq``; ``taskstatus`` for queue-agnostic containers.
    queue: str = "taskstatus"
    #: Qualified name of the task, or the container kind (``celery.chain``...).
    task_class: str = ""
    #: Display name (publish), or the new name (progress with a rename).
    name: str | None = None
    #: The call's arguments by parameter name (publish, prerun).
    arguments: Mapping[str, Any] = field(default_factory=dict)
    #: Owner, kept as text.
    user_id: str | None = None
    #: Task id of the container this task belongs to.
    parent_task_id: str | None = None
    #: Whether this status is a container (chain, group, ...).
    is_container: bool = False
    #: For a container: False while more children may still be published into it.
    sealed: bool = True
    #: Total steps computed at publish.
    total_steps: int = 1
    #: The queue's attempt number when it knows one (1 for the first run).
    attempt: int | None = None
    #: The exception that failed, retried or canceled the task.
    exception: BaseException | None = None
    #: End-user message of a failure (becomes the ``Error`` artifact).
    message: str | None = None
    #: Operator-only detail of a failure.
    traceback: str | None = None
    #: Progress: completed steps to add.
    completed_delta: int = 0
    #: Progress: total steps to add.
    total_delta: int = 0
    #: Progress: a custom stage of the running task (``set_state``).
    stage: str | None = None
    #: Cancel: ask the queue for a hard stop of running work.
    terminate: bool = False
    #: Publish: the queue delivers the task again if its worker dies while running it.
    redeliver_on_loss: bool = False
    #: When it happened, for an event reported after the fact (a run a forked child handed
    #: back); None: when the hook is called.
    at: datetime | None = None
    #: Publish of a container: its children run one after another (see
    #: :attr:`~taskstatus.TaskStatus.sequential`).
    sequential: bool = False
    #: Text values carried from a task's publish to its runs: a ``taskstatus_publish``
    #: implementation may add entries (a trace context, the publish time), which the adapter
    #: sends with the message (at :data:`CARRIER_KEY`) and hands back in the events of each
    #: run (prerun, progress, the outcome, postrun). Empty: nothing is added to the message.
    carrier: dict[str, str] = field(default_factory=dict)
