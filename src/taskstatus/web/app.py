"""``create_app``: the REST API and the dashboard as an ASGI application of its own, to mount
anywhere."""

from __future__ import annotations

from collections.abc import Iterable

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from .. import __version__, get_tracker
from ..tracker import Tracker
from .docs_page import docs_page
from .errors import install_handlers
from .pages import make_pages
from .principal import Authenticator
from .routes import make_router

__all__ = ["create_app"]


def create_app(
    authenticate: Authenticator,
    *,
    tracker: Tracker | None = None,
    trusted_origins: Iterable[str] = (),
    challenge: str | None = None,
    sign_in_url: str | None = None,
) -> FastAPI:
    """The REST API under ``/api/v1`` and the dashboard at ``/``, for callers that
    ``authenticate(request)`` returns.

    ``tracker``: the tracker to serve (default: the process's, ``taskstatus.get_tracker()``,
    looked up on each request so that ``configure()`` may come after this call).
    ``trusted_origins``: other origins (``https://app.example.com``) whose pages may cancel
    and delete; see :mod:`taskstatus.web.csrf`.
    ``challenge``: the ``WWW-Authenticate`` header of a 401 (``'Bearer realm="tasks"'`` for
    an authenticator that reads a token; none for one that reads a session cookie).
    ``sign_in_url``: the application's own sign-in page, which the dashboard's sign-in page
    links to with ``next=`` the page asked for.
    """
    if not callable(authenticate):
        raise TypeError(f"authenticate must be callable, got {type(authenticate).__name__}")
    app = FastAPI(
        title="taskstatus",
        version=__version__,
        description="Status, progress, cancellation and artifacts of background tasks.",
        openapi_url="/api/v1/openapi.json",
        # FastAPI's pages load their scripts from a CDN: see docs_page.
        docs_url=None,
        redoc_url=None,
    )
    app.state.trusted_origins = tuple(trusted_origins)
    app.state.challenge = challenge
    install_handlers(app)
    app.include_router(make_router(authenticate, lambda: tracker or get_tracker()))
    app.include_router(make_pages(authenticate, lambda: tracker or get_tracker(), sign_in_url))
    app.mount("/static", StaticFiles(packages=[("taskstatus.web", "static")]), name="static")
    app.add_api_route(
        "/api/v1/docs",
        docs_page,
        methods=["GET"],
        response_class=HTMLResponse,
        include_in_schema=False,
    )
    return app
