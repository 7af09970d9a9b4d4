"""How failures answer: a status code and ``{"detail": "<what went wrong>"}``, never a 500
for something the caller or the database did."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.routing import Match, Route

from ..exceptions import ConfigurationError, NotFound, StoreError
from .csrf import CrossOrigin

__all__ = [
    "BadInput",
    "Error",
    "Forbidden",
    "Unauthenticated",
    "challenge_headers",
    "install_handlers",
]


class Error(BaseModel):
    detail: str


class BadInput(ValueError):
    """A query parameter the API cannot use (400): a state, a date, a cursor..."""


class Forbidden(Exception):
    """The caller may see the status but not do this to it (403)."""


class Unauthenticated(Exception):
    """The authenticator found nobody (401)."""


log = logging.getLogger(__name__)

#: What a caller learns of a store error: its text (the database's words, a host) is for the
#: operator, in the log.
STORE_FAILED = "The task store is unavailable; the server's log has the details."

#: The error answers each route may give, for the OpenAPI document.
ERRORS = {
    400: {"model": Error, "description": "Invalid input"},
    401: {"model": Error, "description": "No caller identified"},
    404: {"model": Error, "description": "Missing, or not visible to the caller"},
    503: {"model": Error, "description": "The store cannot be reached"},
}
CHANGE_ERRORS = {
    **ERRORS,
    403: {"model": Error, "description": "Not allowed (or, for a change, a cross-site request)"},
}


def _answer(code: int) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    async def handler(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=code)

    return handler


async def _store_failed(request: Request, exc: Exception) -> JSONResponse:
    log.warning("%s %s: %s", request.method, request.url.path, exc)
    return JSONResponse({"detail": STORE_FAILED}, status_code=503)


def challenge_headers(request: Request) -> dict[str, str]:
    """The headers of a 401 (the API's, the dashboard's sign-in page): the app's
    ``WWW-Authenticate`` challenge when it has one (an app that authenticates by a session
    cookie has no scheme to name)."""
    challenge = getattr(request.app.state, "challenge", None)
    return {"WWW-Authenticate": challenge} if challenge else {}


async def _unauthenticated(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=401, headers=challenge_headers(request))


async def _method_not_allowed(request: Request, exc: Exception) -> JSONResponse:
    """405 with every method the path has in ``Allow``: Starlette names only those of the
    first route matching the path, and ``GET`` and ``DELETE tasks/{uuid}`` are two routes."""
    allowed: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.matches(request.scope)[0] is not Match.NONE:
            allowed |= route.methods or set()
    return JSONResponse(
        {"detail": "Method Not Allowed"},
        status_code=405,
        headers={"Allow": ", ".join(sorted(allowed))},
    )


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(405, _method_not_allowed)
    app.add_exception_handler(Unauthenticated, _unauthenticated)
    app.add_exception_handler(StoreError, _store_failed)
    for exception, code in (
        (BadInput, 400),
        (Forbidden, 403),
        (CrossOrigin, 403),
        (NotFound, 404),
        # Artifact files with no configured location: the service is unavailable, and
        # nothing the caller can fix.
        (ConfigurationError, 503),
    ):
        app.add_exception_handler(exception, _answer(code))
