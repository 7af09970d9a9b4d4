"""``taskstatus serve``: the REST API and the dashboard for operators, on one token.

Everyone who presents the token (or signed in with it: :mod:`taskstatus.web.signin`) is a
superuser: this is the operator's view of every owner's tasks, as the CLI's. Without a token
it listens on loopback only, where the machine's own users are trusted as they are with the
CLI.
"""

from __future__ import annotations

import ipaddress

import uvicorn
from fastapi import FastAPI

from ..tracker import Tracker
from .app import create_app
from .metrics import add_metrics_route
from .signin import TokenAuthenticator

__all__ = ["is_loopback", "run", "serve_app"]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def serve_app(tracker: Tracker, token: str | None) -> FastAPI:
    authenticate = TokenAuthenticator(token)
    app = create_app(authenticate, tracker=tracker, challenge='Bearer realm="taskstatus"')
    add_metrics_route(app, authenticate, lambda: tracker)
    return app


def run(tracker: Tracker, host: str, port: int, token: str | None) -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM stop it gracefully)."""
    uvicorn.run(serve_app(tracker, token), host=host, port=port, log_level="warning")
