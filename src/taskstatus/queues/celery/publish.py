"""The publish side: each message is recorded as it is sent, with the chain, group or chord
the message says it belongs to; a tracked task without its owner is refused before sending."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from celery import Celery, Task

from ...events import CARRIER_KEY
from ...lifecycle import Lifecycle
from .._install import Installed
from .canvas import NAME_HEADER, NAME_KWARG, Canvas, eager_chain, group_in_flight
from .compat import spec_of
from .maps import MAPS, describe_map
from .retry import record_retry
from .run import Runner
from .tasks import deferred_again, signature_target, task_event

log = logging.getLogger(__name__)


class Publisher:
    """Records the messages one app sends, through ``amqp.send_task_message`` or, for eager
    runs, as if they had been sent."""

    def __init__(self, app: Celery, installed: Installed, canvas: Canvas, runner: Runner) -> None:
        self.app = app
        self.installed = installed
        self.canvas = canvas
        self.runner = runner

    def before_send(self, name: str, message: Any, extra_headers: Mapping[str, Any] | None) -> bool:
        """Record the message's tasks (and containers) before it is sent. False if it must
        be sent at once even inside a batch: a retry or a message sent again, whose status
        exists already (a ``Retry`` raised out of a ``taskstatus.batch()`` block would
        otherwise lose it)."""
        headers, _properties, body, _sent_event = message
        if not isinstance(body, tuple):
            log.warning("taskstatus does not track Celery message protocol 1 (task %s)", name)
            return True
        args, kwargs, embed = body
        embed = embed or {}
        task_id = headers["id"]
        steps = list(reversed(embed.get("chain") or []))
        chord_body = embed.get("chord")
        scope = group_in_flight.get()
        task: Task | None = self.app.tasks.get(name)
        spec = spec_of(task) if task is not None else None
        canvas = self.canvas
        tracked_steps = [s for s in steps if canvas.is_tracked_sig(s)]
        if (
            spec is None
            and name not in MAPS
            and not tracked_steps
            and chord_body is None
            and scope is None
        ):
            return True  # untracked and no tracked canvas around it: untouched
        if task is not None:
            self.runner.instrument(task)
        if deferred_again({**headers, **(extra_headers or {})}):
            return False  # recorded when first sent; the store may still be unreachable
        lifecycle = self.installed.lifecycle
        if headers.get("retries"):
            record_retry(lifecycle, task_id, name)
            return False
        # A message that carries the rest of its chain, or names a group or chord outside
        # a group's publish (a chord's body, sent by the worker that ran its header), may be
        # a step recorded when its canvas was published: recorded again, it would get a
        # container of its own. A member of a group being published (a chord header's too)
        # is new: no canvas records members ahead, and a member recorded again anyway keeps
        # its first record. So no read per member.
        # Reading (find) or recording (publish) writes what this worker queued first: the
        # next step of a chain may run, and end its chain, before the next batch.
        elsewhere = scope is None and (chord_body is not None or headers.get("group"))
        if (steps or elsewhere) and lifecycle.find(task_id) is not None:
            lifecycle.sends(task_id)  # a step recorded when its canvas was published
            return True
        info = None
        if spec is not None and task is not None:
            try:
                info = spec.describe(
                    signature_target(task),
                    tuple(args),
                    kwargs,
                    task_name=task.name,
                    default_owner=scope.owner if scope is not None else None,
                )
            except TypeError:
                # A later chain step or chord body may get its owner from the canvas: it was
                # recorded (and checked) when the canvas was published.
                if lifecycle.find(task_id) is not None:
                    return True
                raise
        elif name in MAPS:
            mapped = describe_map(self.app, name, kwargs, scope.owner if scope else None)
            if mapped is not None:
                task, info = mapped
        name_hint = (
            (extra_headers or {}).get(NAME_HEADER)
            or headers.get(NAME_HEADER)
            or kwargs.get(NAME_KWARG)
        )
        owner = info.user_id if info else canvas.first_owner(steps)
        parent = canvas.parent_for(lifecycle, headers, chord_body, scope, owner, name_hint)
        if steps:
            chain_id = f"celery.chain:{task_id}"
            canvas.container(
                lifecycle,
                chain_id,
                "celery.chain",
                name_hint or (info.name if info else None),
                owner,
                parent,
            )
            parent = chain_id
        if info is not None and task is not None:
            event = task_event(task_id, task, info, parent)
            lifecycle.publish(event)
            if event.carrier:
                headers[CARRIER_KEY] = event.carrier
        for step in steps:
            canvas.record_step(lifecycle, step, parent, owner)
        return True

    def before_eager_run(
        self, task: Task, args: Any, kwargs: Any, options: Mapping[str, Any]
    ) -> None:
        """Record a task about to run in this process as if its message were being sent
        (a missing owner raises here, from ``delay()``/``apply()``)."""
        headers = dict(options.get("headers") or {})
        headers["id"] = options["task_id"]
        embed: dict[str, Any] = {}
        chain = eager_chain.get()
        if chain is not None and chain[0] == headers["id"]:
            embed["chain"] = chain[1]
        body = (tuple(args or ()), dict(kwargs or {}), embed)
        self.before_send(task.name, (headers, {}, body, None), options.get("headers"))
        # The task runs next, here: inside a batch, what it collected is written first.
        Lifecycle.write_collected()
