"""A real uvicorn server on a free loopback port, and a reader of server-sent events.

Streams are read from a real server: Starlette's TestClient waits for the whole response, so
it cannot follow a stream that ends only when a task does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn

from tests.waiting import TIMEOUT, poll


class LiveServer:
    """``app`` served by uvicorn in a thread; :attr:`url` is its base URL."""

    def __init__(self, app: Any) -> None:
        # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets that say so, and without
        # it a response's second write waits for the client's delayed ACK (40 ms a request).
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        poll(lambda: self.server.started, bool, "the server to start")

    def _run(self) -> None:
        async def serve() -> None:
            self.loop = asyncio.get_running_loop()
            await self.server.serve(sockets=[self.sock])

        asyncio.run(serve())

    def tasks(self) -> int:
        """How many asyncio tasks the server's loop runs now."""

        async def count() -> int:
            return len(asyncio.all_tasks())

        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(count(), self.loop).result(TIMEOUT)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive(), "the server did not stop"
        self.sock.close()


@contextlib.contextmanager
def live_server(app: Any) -> Iterator[LiveServer]:
    server = LiveServer(app)
    try:
        yield server
    finally:
        server.close()


@dataclass
class Event:
    """One event of a stream, or a comment (``comment`` set, the rest None)."""

    id: str | None = None
    data: dict[str, Any] | None = None
    comment: str | None = None


def events(response: httpx.Response) -> Iterator[Event]:
    """The events and comments of a ``text/event-stream`` response, as they arrive."""
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if line.startswith(":"):
            yield Event(comment=line[1:].strip())
        elif line:
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        elif fields:
            data = fields.get("data")
            yield Event(id=fields.get("id"), data=None if data is None else json.loads(data))
            fields = {}


def as_event(detail: dict[str, Any]) -> dict[str, Any]:
    """A status as ``GET tasks/{uuid}`` answers it, as its events carry it: without its
    retry history, which only that route reads."""
    return {name: value for name, value in detail.items() if name != "retries"}


def client(server: LiveServer, user: str | None = None) -> httpx.Client:
    """A client of the server as ``user``; every read waits at most TIMEOUT."""
    headers = {} if user is None else {"x-user": user}
    return httpx.Client(base_url=server.url, headers=headers, timeout=TIMEOUT)


def until(
    stream: Iterator[Event], done: Callable[[Event], bool], what: str, timeout: float = TIMEOUT
) -> list[Event]:
    """The events of ``stream`` up to the first that ``done`` accepts (comments skipped).

    Fails when the stream ends first, or after ``timeout`` seconds of events that ``done``
    refuses (a busy stream never times a read out)."""
    deadline = time.monotonic() + timeout
    got = []
    for item in stream:
        if item.data is not None:
            got.append(item)
            if done(item):
                return got
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout}s for {what}: {[e.data for e in got]}")
    raise AssertionError(f"the stream ended before {what}: {[e.data for e in got]}")
