"""Which kombu producer a message goes out with when a batch (``taskstatus.batch()``, a
group's publish) holds it until the batch's records are written.

Celery borrows a producer from the app's pool for each ``apply_async`` (or for a whole group)
and gives it back when the call returns, when another thread may take it: a held message must
not go out with it later. A group keeps the producer it sends with until its batch has been
sent (a :class:`Lease`), and its held messages use it; any other held message borrows one from
the pool when it is sent. Outside a batch a message goes out at once, with the producer it was
given (``apply_async(producer=...)`` included).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from celery import Celery

__all__ = ["HELD", "HeldSend", "lending"]


class Lease:
    """A producer that a group's publish holds until its batch is sent (``valid``)."""

    def __init__(self, producer: Any) -> None:
        self.producer = producer
        self.valid = True


#: The producer of the group being published here, while its caller still holds it.
_lease: contextvars.ContextVar[Lease | None] = contextvars.ContextVar(
    "taskstatus_celery_lease", default=None
)


@contextmanager
def lending(app: Celery, producer: Any) -> Iterator[Any]:
    """Around a group's publish (and the batch it opens): the group's producer, ``producer``
    if given, else one from the app's pool, held until the block ends; the messages held
    meanwhile go out with it while it is held."""
    outer = _lease.get()
    if outer is not None and (producer is None or producer is outer.producer):
        # A group inside a group's publish (a chord in a group): the outer one holds its
        # producer longer, until its batch is sent.
        yield outer.producer
        return
    with app.producer_or_acquire(producer) as held:
        lease = Lease(held)
        token = _lease.set(lease)
        try:
            yield held
        finally:
            _lease.reset(token)
            lease.valid = False  # given back next: a message held longer borrows its own


class HeldSend:
    """Sends one message with Celery's ``amqp.send_task_message``: called at once, with the
    producer it was given; once :meth:`hold` was called, with the group's producer if still
    held, else with one borrowed from the pool."""

    def __init__(
        self,
        app: Celery,
        send: Callable[..., Any],
        producer: Any,
        name: str,
        message: Any,
        options: dict[str, Any],
    ) -> None:
        self.app = app
        self.send = send
        self.producer = producer
        self.name = name
        self.message = message
        self.options = options
        self.lease: Lease | None = None
        self.held = False

    def hold(self) -> None:
        """The message is held until its batch is written: its producer may be given back."""
        self.held = True
        lease = _lease.get()
        self.lease = lease if lease is not None and lease.producer is self.producer else None

    def __call__(self) -> Any:
        if not self.held:
            return self.send(self.producer, self.name, self.message, **self.options)
        if self.lease is not None and self.lease.valid:
            return self._send_with(self.lease.producer)
        with self.app.producer_or_acquire(None) as producer:
            return self._send_with(producer)

    def _send_with(self, producer: Any) -> Any:
        # As Celery's send_task does: the transport's errors raised as kombu's.
        with producer.connection._reraise_as_library_errors():
            return self.send(producer, self.name, self.message, **self.options)


#: What :meth:`Lifecycle.deliver` returns for a message it holds.
HELD = object()
