"""``taskstatus serve``: the REST API for operators, on one bearer token.

Everyone who presents the token is a superuser: this is the operator's view of every owner's
tasks, as the CLI's. Without a token it listens on loopback only, where the machine's own
users are trusted as they are with the CLI.
"""

from __future__ import annotations

import hmac
import ipaddress

import uvicorn
from fastapi import FastAPI
from starlette.requests import Request

from ..tracker import Tracker
from .app import create_app
from .principal import Authenticator, Principal

__all__ = ["OPERATOR", "bearer_token", "is_loopback", "run", "serve_app"]

#: Who a request with the right token (or any request, without one) is.
OPERATOR = Principal("operator", is_superuser=True)


def bearer_token(token: str | None) -> Authenticator:
    """An authenticator: ``Authorization: Bearer <token>`` is the operator; no token set
    means every caller is. Async, as it does no I/O: a plain function would cost every
    request a hop to a worker thread."""
    expected = None if token is None else token.encode()

    async def authenticate(request: Request) -> Principal | None:
        if expected is None:
            return OPERATOR
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected):
            return OPERATOR
        return None

    return authenticate


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def serve_app(tracker: Tracker, token: str | None) -> FastAPI:
    return create_app(bearer_token(token), tracker=tracker, challenge='Bearer realm="taskstatus"')


def run(tracker: Tracker, host: str, port: int, token: str | None) -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM stop it gracefully)."""
    uvicorn.run(serve_app(tracker, token), host=host, port=port, log_level="warning")
