"""Dramatiq: one middleware turns a message's life cycle into taskstatus's lifecycle hooks.

``install(broker)`` adds :class:`TaskstatusMiddleware` just before Dramatiq's ``Retries``
middleware, so that when a message has been processed, Retries has already decided whether it
will run again: a failure it retries is Retrying, only the last one is Failed.

* **Publish** (in the sender): ``install`` wraps the broker's ``enqueue``, which records the
  status before it enqueues the message (``before_enqueue`` does it for a broker enqueued
  through another way); a missing owner raises ``TypeError`` from ``send()``, a store that
  cannot record it :class:`NotRecorded`, and nothing is enqueued; what was recorded for a
  message the broker then refuses ends Failed. The message id is the task id. A pipeline
  records all its steps when its first message is enqueued (they travel in ``pipe_target``)
  under a ``dramatiq.pipeline`` container; a group run with ``group.run()`` gets a
  ``dramatiq.group`` container (Dramatiq's groups leave no mark on their messages, so
  ``install`` wraps ``group.run``).
* **Publishing many** (``group.run()``, ``pipeline.run()``, ``send()`` inside
  ``taskstatus.batch()``): the statuses are recorded together, with one multi-row INSERT, and
  only then are the messages enqueued (see :meth:`Lifecycle.batch`); ``send()`` there returns
  the message it was given, enqueued when the block ends.
* **Run** (worker threads): ``before_process_message`` starts the status — or skips a message
  whose status was canceled, without running it — and ``after_process_message`` ends it.
  ``TaskCanceledException`` raised by the actor skips the message (no retry, no dead letter).
* **Worker processes** batch their writes (see :mod:`taskstatus.writebehind`) and write them
  before a message is acknowledged, so a worker killed after an ack never loses an outcome.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import dataclasses
import functools
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from .. import messages
from ..events import CARRIER_KEY, TaskEvent
from ..exceptions import StoreUnavailable, TaskCanceledException
from ..failurelog import FailureLog
from ..lifecycle import Lifecycle
from ..tracker import Tracker
from ..tracking import LiveStatus, PublishInfo, TrackSpec, find_spec, qualified_name
from ._dramatiq_acks import Deferred, acknowledge
from ._install import Installed, install_arguments, queue_library

with queue_library("dramatiq"):
    import dramatiq
    from dramatiq import Broker, Message, Middleware
    from dramatiq.broker import MessageProxy
    from dramatiq.composition import group as dramatiq_group
    from dramatiq.composition import pipeline as dramatiq_pipeline
    from dramatiq.middleware import (
        MiddlewareError,
        Retries,
        Shutdown,
        SkipMessage,
        TimeLimitExceeded,
    )
    from dramatiq.worker import ConsumerThread

__all__ = [
    "NAME_OPTION",
    "NotRecorded",
    "OwnerMissing",
    "StoreNotReady",
    "TaskstatusMiddleware",
    "install",
    "named",
]

log = logging.getLogger(__name__)
_drain_failures = FailureLog(log, "writing task statuses")

QUEUE = "dramatiq"
#: Message option naming a task's status (on a pipeline's first message: the pipeline's).
NAME_OPTION = "taskstatus_name"
#: Message option of a pipeline step recorded with its pipeline: the container's task id.
PARENT_OPTION = "taskstatus_parent"

_patch_lock = threading.Lock()
#: How many prefetches' worth of a Redis consumer's messages may wait for their write without
#: holding a place in its prefetch: room for what a busy worker runs during one write and its
#: acknowledgements (with one prefetch's worth, the consumer often found no room and slept).
FREED_PREFETCHES = 4
#: Set on the writer thread while it acknowledges messages whose outcome it has stored.
_acking = threading.local()


class StoreNotReady(MiddlewareError):
    """The store could not record a message's start: the message is not run now, and
    Dramatiq's Retries runs it again later (Dramatiq would only log any other exception
    and run the message untracked)."""


class OwnerMissing(MiddlewareError, TypeError):
    """A tracked actor sent without its owner argument. A ``TypeError``; also a Dramatiq
    ``MiddlewareError``, the only kind a middleware may raise from ``send()``."""


class NotRecorded(MiddlewareError, StoreUnavailable):
    """The store could not record a message's status: ``send()`` raises it and nothing is
    enqueued, as on the other queues. A ``taskstatus.StoreUnavailable``; also a Dramatiq
    ``MiddlewareError`` (Dramatiq would only log any other exception and enqueue)."""


#: The id of the message being enqueued by the wrapped ``broker.enqueue``, which recorded it.
_recorded: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "taskstatus_dramatiq_recorded", default=None
)
#: The ``dramatiq.group`` container of the ``group.run()`` in progress.
_group_scope: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "taskstatus_dramatiq_group", default=None
)


def install(
    target: Broker | None = None,
    positional_tracker: Tracker | None = None,
    /,
    *,
    tracker: Tracker | None = None,
    broker: Broker | None = None,
) -> TaskstatusMiddleware:
    """Track the ``@taskstatus.track`` actors of the Dramatiq broker ``target``; returns the
    middleware added to it.

    Call it where the broker is set up, in senders and workers alike. ``tracker`` defaults to
    the one made by ``taskstatus.configure()`` (looked up at each event). Installing twice
    returns the same middleware. (``install(broker, tracker)`` and ``install(broker=broker)``
    still work, with a DeprecationWarning.)
    """
    broker, tracker = install_arguments(target, broker, "broker", positional_tracker, tracker)
    if not isinstance(broker, Broker):
        raise TypeError(f"install() takes a Dramatiq broker, got {type(broker).__name__}")
    for middleware in broker.middleware:
        if isinstance(middleware, TaskstatusMiddleware):
            return middleware
    middleware = TaskstatusMiddleware(tracker)
    has_retries = any(isinstance(m, Retries) for m in broker.middleware)
    broker.add_middleware(middleware, before=Retries if has_retries else None)
    _guard_enqueue(broker, middleware)
    _patch_compositions()
    _patch_acks()
    return middleware


def named(composition: dramatiq_group | dramatiq_pipeline, name: str) -> Any:
    """Name the container of a group or pipeline (``named(group([...]), "Nightly").run()``)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a container name must be a non-empty str, got {name!r}")
    if isinstance(composition, dramatiq_pipeline):
        composition.messages[0].options[NAME_OPTION] = name
    elif isinstance(composition, dramatiq_group):
        composition.taskstatus_name = name  # type: ignore[attr-defined]
    else:
        raise TypeError(f"named() takes a Dramatiq group or pipeline, got {composition!r}")
    return composition


def _middleware_for(broker: Broker) -> TaskstatusMiddleware | None:
    for middleware in broker.middleware:
        if isinstance(middleware, TaskstatusMiddleware):
            return middleware
    return None


def _guard_enqueue(broker: Broker, middleware: TaskstatusMiddleware) -> None:
    """Wrap this broker's ``enqueue``: it records the message, then sends it (held, inside a
    :meth:`Lifecycle.batch` block, until the block's records are written); what it recorded
    for a message the broker then refuses ends at once."""
    original = broker.enqueue

    @functools.wraps(original)
    def enqueue(message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        with Lifecycle.sending():
            middleware.publish(broker, message)
            send = functools.partial(_enqueue_recorded, original, message, delay)
            # Held: the broker would return a copy of it (with its own broker options).
            return Lifecycle.deliver(send, message)

    broker.enqueue = enqueue  # type: ignore[method-assign]


def _enqueue_recorded(
    enqueue: Callable[..., Message[Any]], message: Message[Any], delay: int | None
) -> Message[Any]:
    """Enqueue a message recorded already: ``before_enqueue`` leaves it be."""
    token = _recorded.set(message.message_id)
    try:
        return enqueue(message, delay=delay)
    finally:
        _recorded.reset(token)


@contextlib.contextmanager
def _publishing_many() -> Iterator[None]:
    """A group's or pipeline's run: its records in one write, then its messages; a store
    that cannot write them raises :class:`NotRecorded`, as ``send()`` does."""
    try:
        with Lifecycle.batch():
            yield
    except StoreUnavailable as exc:
        if isinstance(exc, NotRecorded):
            raise
        raise NotRecorded(str(exc)) from exc


def _patch_compositions() -> None:
    """Wrap ``group.run`` and ``pipeline.run`` once per process: each records its messages
    with one write before the first is enqueued, and a group's messages join one
    container."""
    with _patch_lock:
        if getattr(dramatiq_group.run, "taskstatus_patched", False):
            return
        run_group: Callable[..., Any] = dramatiq_group.run
        run_pipeline: Callable[..., Any] = dramatiq_pipeline.run

        @functools.wraps(run_group)
        def group_run(self: dramatiq_group, *, delay: int | None = None) -> Any:
            middleware = _middleware_for(self.broker)
            if middleware is None:
                return run_group(self, delay=delay)
            with _publishing_many():
                # A member's records written early (a pipeline's, at its seal) end unsent
                # if a later member raises; the group's are written at its seal.
                with Lifecycle.sending(), middleware.group_scope(self) as container:
                    result = run_group(self, delay=delay)
                if container is not None:
                    middleware.lifecycle.seal(container)
                return result

        @functools.wraps(run_pipeline)
        def pipeline_run(self: dramatiq_pipeline, *, delay: int | None = None) -> Any:
            if _middleware_for(self.broker) is None:
                return run_pipeline(self, delay=delay)
            with _publishing_many():
                return run_pipeline(self, delay=delay)

        group_run.taskstatus_patched = True  # type: ignore[attr-defined]
        pipeline_run.taskstatus_patched = True  # type: ignore[attr-defined]
        dramatiq_group.run = group_run  # type: ignore[method-assign]
        dramatiq_pipeline.run = pipeline_run  # type: ignore[method-assign]


def _patch_acks() -> None:
    """Wrap ``ConsumerThread.post_process_message`` once per process: the acknowledgement of
    a message whose success is queued is handed to the writer, which sends it once the
    success is stored, so the worker thread goes on at once."""
    with _patch_lock:
        if getattr(ConsumerThread.post_process_message, "taskstatus_patched", False):
            return
        original: Callable[..., Any] = ConsumerThread.post_process_message

        @functools.wraps(original)
        def post_process_message(self: ConsumerThread, message: MessageProxy) -> None:
            middleware = _middleware_for(self.broker)
            if middleware is None or not middleware.defer_ack(self, message, original):
                original(self, message)

        post_process_message.taskstatus_patched = True  # type: ignore[attr-defined]
        ConsumerThread.post_process_message = post_process_message  # type: ignore[method-assign]


class _Tracked(NamedTuple):
    """A tracked actor, with what taskstatus reads of it at each message."""

    actor: dramatiq.Actor[Any, Any]
    spec: TrackSpec
    task_class: str


class _Actors:
    """The tracked actors of a broker, by name, each looked up once: a worker thread asks
    at every message. An actor declared again, or whose function was replaced, is looked
    up anew."""

    def __init__(self) -> None:
        self._known: dict[str, tuple[object, object, _Tracked | None]] = {}

    def get(self, broker: Broker, actor_name: str) -> _Tracked | None:
        actor = broker.actors.get(actor_name)
        if actor is None:
            return None
        fn = actor.fn
        known = self._known.get(actor_name)
        if known is not None and known[0] is actor and known[1] is fn:
            return known[2]
        spec = find_spec(actor, fn)
        tracked = None if spec is None else _Tracked(actor, spec, qualified_name(fn))
        self._known[actor_name] = (actor, fn, tracked)
        return tracked


def _steps(message: Message[Any]) -> Iterator[dict[str, Any]]:
    """The later steps of a pipeline whose first message is ``message``, in order."""
    target = message.options.get("pipe_target")
    while target:
        yield target
        target = (target.get("options") or {}).get("pipe_target")


class TaskstatusMiddleware(Installed, Middleware):
    """Dramatiq's message life cycle -> taskstatus lifecycle hooks."""

    def __init__(self, tracker: Tracker | None = None) -> None:
        self._tracker = tracker
        self._actors = _Actors()
        #: The messages running, each with the lifecycle that started it.
        self._running: dict[str, tuple[LiveStatus, Lifecycle]] = {}
        self._running_lock = threading.Lock()
        #: Messages whose success is queued, not stored yet: their ack waits for the write.
        self._unstored: dict[str, Lifecycle] = {}
        #: Per consumer, the messages waiting for a write that no longer take a prefetch slot.
        self._freed: collections.Counter[ConsumerThread] = collections.Counter()

    # -- publish (sender) --------------------------------------------------------------------
    def before_enqueue(self, broker: Broker, message: Message[Any], delay: int) -> None:
        if _recorded.get() != message.message_id:  # a broker whose enqueue is not wrapped
            self.publish(broker, message)

    def publish(self, broker: Broker, message: Message[Any]) -> None:
        """Record a message about to be enqueued (collected, inside a batch block)."""
        options = message.options
        if options.get(PARENT_OPTION):
            # The next step of a pipeline, recorded with it, sent by the worker that ran the
            # step before (whose queued success is written first).
            self.lifecycle.sends(message.message_id)
            return
        if options.get("retries"):
            return  # a retry: recorded when its run ended
        try:
            self._record(broker, message)
        except StoreUnavailable as exc:
            raise NotRecorded(str(exc)) from exc

    def _record(self, broker: Broker, message: Message[Any]) -> None:
        """Record a message about to be enqueued (with its pipeline's steps)."""
        options = message.options
        tracked = self._actors.get(broker, message.actor_name)
        steps = list(_steps(message))
        if tracked is None and not steps:
            return
        scope = _group_scope.get()
        parent = scope[0] if scope is not None else None
        lifecycle = self.lifecycle
        try:
            info = self._describe(tracked, message.args, message.kwargs, strict=True)
        except TypeError as exc:
            raise OwnerMissing(str(exc)) from None
        if info is not None and options.get(NAME_OPTION) and not steps:
            info = dataclasses.replace(info, name=str(options[NAME_OPTION])[:255])
        owner = info.user_id if info is not None else scope[1] if scope is not None else None
        container = None
        if steps:
            container = f"dramatiq.pipeline:{message.message_id}"
            lifecycle.publish_container(
                container,
                queue=QUEUE,
                kind="dramatiq.pipeline",
                name=options.get(NAME_OPTION) or (info.name if info else None),
                user_id=owner,
                parent_task_id=parent,
                sealed=False,
                sequential=True,
            )
            parent = container
        if tracked is not None and info is not None:
            event = self._event(message.message_id, tracked, info, parent)
            lifecycle.publish(event)
            if event.carrier:
                options[CARRIER_KEY] = event.carrier
        if container is not None:
            for step in steps:
                self._record_step(broker, step, container, owner)
            lifecycle.seal(container)

    def _describe(
        self,
        tracked: _Tracked | None,
        args: Any,
        kwargs: Any,
        *,
        strict: bool,
        owner: str | None = None,
    ) -> PublishInfo | None:
        if tracked is None:
            return None
        return tracked.spec.describe(
            tracked.actor.fn,
            tuple(args or ()),
            dict(kwargs or {}),
            task_name=tracked.task_class,
            partial=not strict,
            default_owner=owner,
        )

    def _event(
        self,
        task_id: str,
        tracked: _Tracked,
        info: PublishInfo,
        parent: str | None,
        attempt: int = 1,
        carrier: dict[str, str] | None = None,
    ) -> TaskEvent:
        # Dramatiq acknowledges late: the message of a worker that died comes back.
        return info.event(
            task_id,
            queue=QUEUE,
            task_class=tracked.task_class,
            parent_task_id=parent,
            redeliver_on_loss=True,
            attempt=attempt,
            carrier=carrier,
        )

    def _record_step(
        self, broker: Broker, step: dict[str, Any], parent: str, owner: str | None
    ) -> None:
        """A later pipeline step: recorded Pending now, enqueued by a worker later."""
        step_options = step.setdefault("options", {})
        step_options[PARENT_OPTION] = parent  # travels in pipe_target: not recorded twice
        tracked = self._actors.get(broker, step.get("actor_name", ""))
        if tracked is None:
            return
        # Its last argument (the previous step's result) is not known yet.
        info = self._describe(
            tracked, step.get("args"), step.get("kwargs"), strict=False, owner=owner
        )
        if info is not None:
            event = self._event(step["message_id"], tracked, info, parent)
            self.lifecycle.publish(event)
            if event.carrier:
                step_options[CARRIER_KEY] = event.carrier

    @contextlib.contextmanager
    def group_scope(self, group: dramatiq_group) -> Iterator[str | None]:
        """Messages enqueued by ``group.run()`` join one ``dramatiq.group`` container, whose
        task id the block gets (None: no tracked member), and which the caller seals once
        they are enqueued. The container takes the first tracked member's owner; the others
        are checked as each member is recorded, which (in the batch of ``group.run``) is
        before any is enqueued."""
        owner = next((owner for owner in self._owners(group) if owner is not None), None)
        if owner is None:
            yield None
            return
        lifecycle = self.lifecycle
        outer = _group_scope.get()
        container = f"dramatiq.group:{uuid.uuid4()}"
        lifecycle.publish_container(
            container,
            queue=QUEUE,
            kind="dramatiq.group",
            name=getattr(group, "taskstatus_name", None),
            user_id=owner,
            parent_task_id=outer[0] if outer is not None else None,
            sealed=False,
        )
        token = _group_scope.set((container, owner))
        try:
            yield container
        finally:
            _group_scope.reset(token)

    def _owners(self, group: dramatiq_group) -> Iterator[str | None]:
        """The owner of each member of ``group`` (None: untracked), in order."""
        for child in group.children:
            if isinstance(child, dramatiq_group):
                yield from self._owners(child)
                continue
            first = child.messages[0] if isinstance(child, dramatiq_pipeline) else child
            tracked = self._actors.get(group.broker, first.actor_name)
            info = self._describe(tracked, first.args, first.kwargs, strict=True)
            yield info.user_id if info is not None else None

    # -- run (worker threads) ----------------------------------------------------------------
    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        tracked = self._actors.get(broker, message.actor_name)
        if tracked is None:
            return
        _guard(tracked.actor)
        info = self._describe(tracked, message.args, message.kwargs, strict=False)
        assert info is not None
        options, message_id = message.options, message.message_id
        attempt = int(options.get("retries") or 0) + 1
        carrier = dict(options.get(CARRIER_KEY) or {})
        event = self._event(message_id, tracked, info, None, attempt, carrier)
        lifecycle = self.lifecycle
        try:
            live = lifecycle.start(event)
        except TaskCanceledException as exc:
            lifecycle.end(event, exception=exc)
            raise SkipMessage(str(exc)) from exc
        except Exception as exc:
            if lifecycle.deferral(exc) is None:
                raise
            # Retries delivers the message again, with its own backoff.
            raise StoreNotReady(f"cannot record the start of {message_id}: {exc}") from exc
        with self._running_lock:
            self._running[message_id] = (live, lifecycle)

    def _take(self, message_id: str) -> tuple[LiveStatus, Lifecycle] | None:
        with self._running_lock:
            return self._running.pop(message_id, None)

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        message_id = message.message_id
        running = self._take(message_id)
        if running is None:
            return
        live, lifecycle = running
        if exception is None:
            lifecycle.end(live)
            if lifecycle.writes_batched:
                with self._running_lock:
                    self._unstored[message_id] = lifecycle
            return
        # Retries ran just before: a message it will run again is not failed.
        retrying = not message.failed and any(isinstance(m, Retries) for m in broker.middleware)
        lifecycle.end(
            live,
            exception=exception,
            retrying=retrying,
            message=_message_for(exception),
            traceback=message.options.get("traceback"),
        )

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        running = self._take(message.message_id)
        if running is not None:  # the actor raised TaskCanceledException
            live, lifecycle = running
            lifecycle.end(live, exception=TaskCanceledException("canceled while running"))

    # -- worker processes ----------------------------------------------------------------------
    def after_worker_boot(self, broker: Broker, worker: dramatiq.Worker) -> None:
        self.lifecycle.worker_started()

    def defer_ack(
        self,
        consumer: ConsumerThread,
        message: MessageProxy,
        ack: Callable[[ConsumerThread, MessageProxy], None],
    ) -> bool:
        """Hand the acknowledgement of a message whose success is not stored yet to the
        writer; False: acknowledge now."""
        message_id = message.message_id
        with self._running_lock:
            lifecycle = self._unstored.pop(message_id, None)
            if lifecycle is None:
                return False
            freed = self._free_slot(consumer, message_id)
        if lifecycle.after_write(self._acknowledge, (Deferred(consumer, message, ack), freed)):
            return True
        if freed:  # no writer (the tracker closed): the caller acknowledges it now
            self._take_slots([consumer])
        return False

    def _acknowledge(self, stored: list[tuple[Deferred, bool]]) -> None:
        """Acknowledge messages whose success the writer has stored (on its thread)."""
        _acking.stored = True
        try:
            acknowledge([deferred for deferred, _ in stored])
        finally:
            _acking.stored = False
            self._take_slots([deferred.consumer for deferred, freed in stored if freed])

    def _free_slot(self, consumer: ConsumerThread, message_id: str) -> bool:
        """Stop counting a message whose success only waits to be stored against the Redis
        consumer's prefetch, as if it were acknowledged already: otherwise the messages
        waiting for a write fill the prefetch, and the consumer sleeps instead of fetching
        while the worker threads have nothing to do. At most :data:`FREED_PREFETCHES`
        prefetches' worth of a consumer's messages at a time, so that a store that cannot
        write still holds the worker back. (Other brokers count unacknowledged messages
        where taskstatus cannot reach.)"""
        outstanding = getattr(consumer.consumer, "queued_message_ids", None)
        if (
            not isinstance(outstanding, set)
            or self._freed[consumer] >= FREED_PREFETCHES * consumer.prefetch
        ):
            return False
        outstanding.discard(message_id)
        self._freed[consumer] += 1
        return True

    def _take_slots(self, consumers: list[ConsumerThread]) -> None:
        """Messages freed by :meth:`_free_slot` are acknowledged: they leave the bound."""
        if consumers:
            with self._running_lock:
                self._freed.subtract(consumers)

    def before_ack(self, broker: Broker, message: MessageProxy) -> None:
        if not getattr(_acking, "stored", False):
            self._drain(ended_only=True)

    def before_nack(self, broker: Broker, message: MessageProxy) -> None:
        self._drain(ended_only=True)

    def before_worker_thread_shutdown(self, broker: Broker, thread: Any) -> None:
        """Send the acknowledgements still waiting for a write before the consumers stop."""
        try:
            self.lifecycle.run_waiting()
        except Exception:
            log.warning("could not write task statuses before stopping", exc_info=True)

    def after_worker_shutdown(self, broker: Broker, worker: dramatiq.Worker) -> None:
        self._drain()

    def _drain(self, *, ended_only: bool = False) -> None:
        """Write the worker's queued events. Before an acknowledgement, those of ended
        messages: the worker thread waits for them, and one write covers every message that
        ended meanwhile in the other threads (a group commit)."""
        try:
            self.lifecycle.drain(ended_only=ended_only)
        except Exception:
            _drain_failures.failed("could not write task statuses yet; will retry")
        else:
            _drain_failures.succeeded()


def _message_for(exception: BaseException) -> str | None:
    """The end user's Error text for an interruption (None: the exception's own)."""
    if isinstance(exception, TimeLimitExceeded):
        return messages.TIMED_OUT
    if isinstance(exception, Shutdown):
        return messages.WORKER_SHUT_DOWN
    return None


def _guard(actor: dramatiq.Actor[Any, Any]) -> None:
    """Make a canceled actor skip its message instead of failing it (so Retries neither
    retries nor dead-letters a canceled task)."""
    fn: Callable[..., Any] = actor.fn
    if getattr(fn, "taskstatus_guarded", False):
        return

    @functools.wraps(fn)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TaskCanceledException as exc:
            raise SkipMessage(str(exc)) from exc

    guarded.taskstatus_guarded = True  # type: ignore[attr-defined]
    actor.fn = guarded
