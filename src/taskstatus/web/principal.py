"""Who is calling: the :class:`Principal` an application's authenticator returns.

taskstatus has no users of its own. The application that mounts the API knows who the caller
is (a session, a token, a header set by a proxy) and says so through ``authenticate(request)``;
owner ids are compared as text, as statuses store them.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

__all__ = ["Authenticator", "Principal", "identify"]


@dataclass(frozen=True)
class Principal:
    """A caller: ``id`` is compared with the ``user_id`` of statuses (as text); a superuser
    sees and may do everything, including operator-only detail such as tracebacks."""

    id: str
    is_superuser: bool = False

    def __post_init__(self) -> None:
        if self.id is None or str(self.id) == "":
            raise TypeError("a Principal needs an id; return None for no caller")
        # Owner ids are text everywhere (a task called with user_id=7 stores "7").
        object.__setattr__(self, "id", str(self.id))


#: ``authenticate(request)``, sync or async: the caller, or None when there is none.
Authenticator = Callable[[Request], Principal | Awaitable[Principal | None] | None]


async def identify(authenticate: Authenticator, request: Request) -> Principal | None:
    """Run the application's authenticator; a sync one runs in a worker thread, since it may
    well read a database (a session store) and must not stall the event loop."""
    if inspect.iscoroutinefunction(authenticate) or inspect.iscoroutinefunction(
        getattr(authenticate, "__call__", None)  # noqa: B004 - an async __call__
    ):
        found = await authenticate(request)  # type: ignore[misc]
    else:
        found = await run_in_threadpool(authenticate, request)
        if inspect.isawaitable(found):
            found = await found
    if found is not None and not isinstance(found, Principal):
        raise TypeError(
            f"authenticate() must return a taskstatus.web.Principal or None, "
            f"got {type(found).__name__}"
        )
    return found
