"""Live events: server-sent events of status changes, on the store's change feed.

Each event is one change: ``id:`` the feed's position after it (what ``Last-Event-ID`` gives
back on a reconnection), ``data:`` the status as the REST routes show it. Changes come from
:meth:`Tracker.follow_async <taskstatus.Tracker.follow_async>`, so they include those of
worker processes, and a fast-ticking status is coalesced to one event per
:data:`MIN_INTERVAL`. Every status is checked against the caller before it goes out.

No ``from __future__ import annotations``: FastAPI reads the routes' annotations at runtime.
"""

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

import anyio
import anyio.to_thread
from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from ..changes import Position
from ..exceptions import NotFound
from ..feed import PAGE, Update
from ..models import TaskStatus
from ..tracker import Tracker
from .errors import CHANGE_ERRORS, BadInput
from .payloads import status_out
from .permissions import allowed
from .principal import Principal

if TYPE_CHECKING:
    from .routes import _Api

__all__ = ["HEARTBEAT", "MIN_INTERVAL", "POLL_INTERVAL", "WOKEN_POLL_INTERVAL", "EventStream"]

#: Seconds between two comment lines on a quiet stream: they keep proxies from closing it
#: and let the server notice a client that is gone.
HEARTBEAT = 15.0
#: At most one event per status in this many seconds (the last state always goes out).
MIN_INTERVAL = 0.25
#: How often the streams of a process read the store when nothing wakes them: one read for
#: all of them (:class:`taskstatus.fanout.Hub`), so an open stream costs no query of its own.
POLL_INTERVAL = 0.25
#: The same on a store whose writes wake the streams (PostgreSQL's NOTIFY; a lost listening
#: connection wakes them too).
WOKEN_POLL_INTERVAL = 15.0

LastEventId = Annotated[
    str | None,
    Header(
        alias="Last-Event-ID",
        description="The `id` of the last event received: resume after it.",
    ),
]
EVENTS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A stream of server-sent events: `id:` a position, `data:` a status.",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    },
}


class EventStream(StreamingResponse):
    """A ``text/event-stream`` that nothing on the way buffers or caches, and that stops as
    soon as the client goes (not at its next write, a heartbeat later)."""

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[str], status_code: int = 200) -> None:
        super().__init__(
            content, status_code, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as group:

            async def stream() -> None:
                await self.stream_response(send)
                group.cancel_scope.cancel()

            group.start_soon(stream)
            await self.listen_for_disconnect(receive)
            group.cancel_scope.cancel()


class _Renderer:
    """What one stream sends for an update: the status if the caller may see it and it
    passes the stream's filters; on a task's stream, also the task's own aggregate when one
    of its descendants changed, and whether the stream is over."""

    def __init__(
        self,
        request: Request,
        principal: Principal,
        tracker: Tracker,
        keep: Callable[[TaskStatus], bool] = lambda status: True,
        root: TaskStatus | None = None,
    ) -> None:
        self.request = request
        self.principal = principal
        self.tracker = tracker
        self.keep = keep
        self.root = root
        self._root_sent: object = None

    def event(self, position: str, status: TaskStatus) -> str:
        out = status_out(self.request, self.principal, status, self.tracker.artifacts(status))
        if status.uuid == getattr(self.root, "uuid", None):
            self._root_sent = _aggregate(status)
        return f"id: {position}\ndata: {out.model_dump_json()}\n\n"

    def render(self, update: Update) -> tuple[list[str], bool]:
        """The events for ``update``, and whether the stream ends after them."""
        status, sent = update.status, []
        if self.keep(status) and allowed(self.tracker, self.principal, "view", status):
            sent.append(self.event(update.position, status))
        if self.root is None:
            return sent, False
        if status.uuid == self.root.uuid:
            return sent, status.state.is_terminal or not sent
        if self.root.is_container:
            # A container's steps are its descendants' sums: its row did not change, but
            # what a client shows of it did.
            try:
                root = self.tracker.get(self.root.uuid)
            except NotFound:
                return sent, True
            if not allowed(self.tracker, self.principal, "view", root):
                return sent, True
            if _aggregate(root) != self._root_sent:
                sent.append(self.event(update.position, root))
        return sent, False


def _aggregate(status: TaskStatus) -> tuple[object, ...]:
    return (status.state, status.state_text, status.completed_steps, status.total_steps)


async def _replay(updates: Sequence[Update]) -> AsyncIterator[Update]:
    for update in updates:
        yield update


async def _events(
    source: AsyncIterator[Update], renderer: _Renderer, first: Sequence[str] = ()
) -> AsyncIterator[str]:
    """The stream's text: ``first``, then the rendered updates, with a heartbeat comment
    whenever :data:`HEARTBEAT` passes without one. The pending read of the feed is kept
    across heartbeats (cancelling it would end the feed's generator), and on the way out it
    is cancelled and awaited, so that no task or thread outlives the stream."""
    for chunk in first:
        yield chunk
    pending: asyncio.Future[Update] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(source.__anext__())
            done, _ = await asyncio.wait({pending}, timeout=HEARTBEAT)
            if not done:
                yield ": heartbeat\n\n"
                continue
            try:
                update = pending.result()
            except StopAsyncIteration:
                return
            finally:
                pending = None
            chunks, last = await anyio.to_thread.run_sync(renderer.render, update)
            for chunk in chunks:
                yield chunk
            if last:
                return
    finally:
        with anyio.CancelScope(shield=True):
            if pending is not None:
                pending.cancel()
                await asyncio.gather(pending, return_exceptions=True)
            if isinstance(source, AsyncGenerator):
                await source.aclose()


def _resume(last_event_id: str | None) -> str | None:
    """The position a reconnecting client gives back; 400 for anything else."""
    if last_event_id is None:
        return None
    try:
        return str(Position.parse(last_event_id))
    except ValueError as exc:
        raise BadInput(f"Last-Event-ID: {exc}") from None


def _follow(tracker: Tracker, after: str, **filters: Any) -> AsyncIterator[Update]:
    woken = tracker.store.change_signal() is not None
    return tracker.follow_async(
        after,
        poll_interval=WOKEN_POLL_INTERVAL if woken else POLL_INTERVAL,
        min_interval=MIN_INTERVAL,
        **filters,
    )


def add_event_routes(
    router: APIRouter, api: "_Api", filters: Callable[..., Awaitable[dict[str, Any]]]
) -> None:
    """``tasks/{uuid}/events`` and ``events``; ``filters``: the list's filter dependency."""
    Caller = Annotated[Principal, Depends(api.caller)]
    Filters = Annotated[dict[str, Any], Depends(filters)]

    @router.get(
        "/tasks/{uuid}/events",
        response_class=Response,
        summary="Follow a status (and a container's children) as server-sent events",
        description=(
            "The first event is the status as it is, unless `Last-Event-ID` resumes a stream;"
            " the stream ends after the status's terminal event. 204 when resuming a stream"
            " that has nothing more to send."
        ),
        responses={**EVENTS, 204: {"description": "The stream is over: do not reconnect."}},
    )
    def task_events(
        request: Request, principal: Caller, uuid: UUID, last_event_id: LastEventId = None
    ) -> Response:
        after = _resume(last_event_id)
        tracker = api.tracker()
        # Before the status is read: a change made meanwhile comes again, none is lost.
        position = tracker.change_position(root=uuid) if after is None else None
        tracker, status = api.visible(principal, uuid)
        renderer = _Renderer(request, principal, tracker, root=status)
        if position is not None:
            first = [renderer.event(position, status)]
            if status.state.is_terminal:
                return EventStream(_events(_replay(()), renderer, first))
            return EventStream(_events(_follow(tracker, position, root=uuid), renderer, first))
        assert after is not None
        if status.state.is_terminal:
            missed = tracker.changes(after, root=uuid, limit=PAGE)
            if not missed:
                return Response(status_code=204)
            return EventStream(_events(_replay(missed), renderer))
        return EventStream(_events(_follow(tracker, after, root=uuid), renderer))

    @router.get(
        "/events",
        response_class=Response,
        summary="Follow every status the caller may see as server-sent events",
        description="Takes the filters of `tasks/`; an event is a status that passes them.",
        responses={**EVENTS, 403: CHANGE_ERRORS[403]},
    )
    def events(
        request: Request, principal: Caller, filters: Filters, last_event_id: LastEventId = None
    ) -> EventStream:
        tracker = api.tracker()
        owners = api.owners(tracker, principal, filters["user_id"])
        after = _resume(last_event_id)
        query = tracker.query(user_ids=owners, **filters)
        parent = filters["parent"]
        # The owners and the subtree are filtered in the store's query; the rest per change.
        scope: dict[str, Any] = {
            "user_id": query.user_ids,
            "root": parent if isinstance(parent, UUID) else None,
        }
        first = []
        if after is None:
            after = tracker.change_position(**scope)
            first = [f"id: {after}\n\n"]  # sets the client's Last-Event-ID, fires nothing
        renderer = _Renderer(request, principal, tracker, keep=query.matches)
        return EventStream(_events(_follow(tracker, after, **scope), renderer, first))
