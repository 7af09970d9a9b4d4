"""Dramatiq acknowledgements sent together, once the outcomes of their messages are stored.

A worker's writer thread stores the successes of many messages in one write, then sends their
acknowledgements. One by one, each is a round trip to the broker, and on a busy worker the
thread spends most of its time on them while the messages hold their prefetch places. On
Redis they go in one pipeline instead: the script and arguments of Dramatiq's own
``RedisBroker.do_ack``, so the broker sees exactly what it would have, and middleware gets its
``before_ack`` and ``after_ack`` for each message as usual.

The arguments are those the script's own header documents; a Dramatiq whose script documents
others, another broker, or a pipeline that fails (Redis away) is acknowledged one message at a
time through Dramatiq's own ``post_process_message``, which retries until Redis is back (a
middleware may then see ``before_ack`` twice). An acknowledgement sent twice is harmless: the
script removes a message that is still there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, NamedTuple

from ._install import queue_library

with queue_library("dramatiq"):
    from dramatiq.broker import MessageProxy
    from dramatiq.common import current_millis
    from dramatiq.worker import ConsumerThread

__all__ = ["Deferred", "acknowledge"]

log = logging.getLogger(__name__)

#: The arguments of Dramatiq's Redis dispatch script, as its header documents them.
DISPATCH_ARGUMENTS = (
    "args=[command, timestamp, queue_name, worker_id, heartbeat_timeout, dead_message_ttl, "
    "do_maintenance, max_unpack_size, ...]"
)


class Deferred(NamedTuple):
    """A processed message whose acknowledgement waits for its outcome to be stored."""

    consumer: ConsumerThread
    message: MessageProxy
    #: Dramatiq's own ``ConsumerThread.post_process_message``: one acknowledgement.
    post_process: Callable[[ConsumerThread, MessageProxy], None]


def acknowledge(deferred: list[Deferred]) -> None:
    """Acknowledge these messages: a consumer's together where its broker allows it."""
    by_consumer: dict[ConsumerThread, list[Deferred]] = {}
    for item in deferred:
        if item.message.failed:  # failed after all, by a later middleware: rejected
            item.post_process(item.consumer, item.message)
        else:
            by_consumer.setdefault(item.consumer, []).append(item)
    for consumer, items in by_consumer.items():
        dispatch = _dispatcher(consumer) if len(items) > 1 else None
        if dispatch is not None:
            _pipelined(consumer, dispatch, items)
        else:
            for item in items:
                item.post_process(consumer, item.message)


def _dispatcher(consumer: ConsumerThread) -> Any:
    """The Redis dispatch script of this consumer's broker, if its arguments are the ones
    :data:`DISPATCH_ARGUMENTS` names (None: acknowledge one by one)."""
    redis_consumer = consumer.consumer
    if not isinstance(getattr(redis_consumer, "queued_message_ids", None), set):
        return None
    scripts = getattr(consumer.broker, "scripts", None)
    script = scripts.get("dispatch") if isinstance(scripts, dict) else None
    if DISPATCH_ARGUMENTS not in str(getattr(script, "script", "")):
        return None
    return script


def _pipelined(consumer: ConsumerThread, dispatch: Any, items: list[Deferred]) -> None:
    """One Redis pipeline for the acknowledgements of one consumer's messages."""
    # A RedisBroker and its consumer (_dispatcher saw to it).
    broker: Any = consumer.broker
    redis_consumer: Any = consumer.consumer
    max_unpack: Callable[[], int] | None = getattr(broker, "_max_unpack_size", None)
    head = [
        redis_consumer.queue_name,  # the queue it was fetched from (a delay queue's own)
        broker.broker_id,
        broker.heartbeat_timeout,
        broker.dead_message_ttl,
        0,  # no maintenance: Dramatiq never runs it on an acknowledgement either
        max_unpack() if max_unpack is not None else 0,
    ]
    try:
        for item in items:
            broker.emit_before("ack", item.message)
        pipe = broker.client.pipeline(transaction=False)
        for item in items:
            args = ["ack", current_millis(), *head, item.message.options["redis_message_id"]]
            dispatch(keys=[broker.namespace], args=args, client=pipe)
        pipe.execute()
    except Exception as exc:
        log.warning(
            "could not acknowledge %d messages together (%s); acknowledging them one by one",
            len(items),
            exc,
        )
        for item in items:
            item.post_process(consumer, item.message)
        return
    for item in items:
        redis_consumer.queued_message_ids.discard(item.message.message_id)
    for item in items:
        try:
            broker.emit_after("ack", item.message)
        except Exception:  # a MiddlewareError: Dramatiq would log it and go on, too
            log.exception("after_ack of message %s failed", item.message.message_id)
