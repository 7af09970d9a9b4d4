"""The REST API under test: an app on a tracker, and clients that say who they are.

Callers identify with an ``X-User`` header (``root`` is a superuser): an authenticator as an
application would write one, kept trivial so the tests are about the API's own rules.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator

import pytest
from starlette.requests import Request

from taskstatus import Tracker
from taskstatus.web import Principal, create_app
from tests.web.browser import browser, expect, screenshots  # noqa: F401  (fixtures)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # its own advice to install httpx2, which is not needed
    from starlette.testclient import TestClient

OWNER, OTHER, ROOT = "7", "8", "root"
ROLES = ("owner", "other", "superuser", "anonymous")
USER_OF_ROLE = {"owner": OWNER, "other": OTHER, "superuser": ROOT, "anonymous": None}


def header_user(request: Request) -> Principal | None:
    user = request.headers.get("x-user")
    return None if user is None else Principal(user, is_superuser=user == ROOT)


@pytest.fixture
def make_client() -> Iterator[Callable[..., TestClient]]:
    """``make_client(app_or_tracker, user=None)``: a client of the app (made on the tracker
    with the header authenticator), sending ``X-User: user`` when given."""
    made: list[TestClient] = []

    def make(app: object, user: str | None = None, **options: object) -> TestClient:
        if isinstance(app, Tracker):
            app = create_app(header_user, tracker=app)
        headers = {} if user is None else {"x-user": user}
        client = TestClient(app, headers=headers, **options)  # type: ignore[arg-type]
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def as_user(tracker: Tracker, make_client: Callable[..., TestClient]) -> Callable[..., TestClient]:
    """``as_user(user)``: a client of the API on the ``tracker`` fixture (every backend)."""
    app = create_app(header_user, tracker=tracker)
    return lambda user=None: make_client(app, user)
