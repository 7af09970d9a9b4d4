"""Signing in to ``taskstatus serve``'s dashboard with its token, and the sign-in page of an
application that has its own."""

from __future__ import annotations

from http.cookies import SimpleCookie

import pytest
from fastapi import FastAPI

from taskstatus import State
from taskstatus.web import create_app
from taskstatus.web.serve import serve_app
from taskstatus.web.signin import COOKIE
from tests.helpers import publish
from tests.web.conftest import header_user
from tests.web.test_pages import page

TOKEN = "s3cret-token"
#: What a page of another site sends with its POST.
CROSS_SITE = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
#: What the dashboard's own form sends.
SAME_SITE = {"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"}


def cookie_of(response) -> SimpleCookie:
    cookie = SimpleCookie()
    cookie.load(response.headers["set-cookie"])
    return cookie


@pytest.fixture
def served(memory_tracker, make_client):
    """``served(base_url=..., token=TOKEN)``: a client of ``taskstatus serve``'s app,
    following no redirects, so that each answer can be looked at."""

    def make(token: str | None = TOKEN, **options):
        app = serve_app(memory_tracker, token)
        return make_client(app, follow_redirects=False, **options)

    return make


def sign_in(client, token: str = TOKEN, next_url: str = "/", prefix: str = ""):
    return client.post(
        f"{prefix}/sign-in", data={"token": token, "next": next_url}, headers=SAME_SITE
    )


def test_the_token_signs_a_browser_in_with_a_cookie_that_is_not_the_token(memory_tracker, served):
    status = publish(memory_tracker, user_id="7", name="Export")
    client = served()
    form = page(client.get(f"/tasks/{status.uuid}"))
    assert form.having("name", "token") and form.having("type", "password")
    assert form.having("name", "next")[0]["value"] == f"/tasks/{status.uuid}"

    answer = sign_in(client, next_url=f"/tasks/{status.uuid}")
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/tasks/{status.uuid}"
    morsel = cookie_of(answer)[COOKIE]
    assert morsel["httponly"] and morsel["samesite"] == "strict" and morsel["path"] == "/"
    assert not morsel["secure"], "plain http: a Secure cookie would never come back"
    assert TOKEN not in morsel.value

    assert client.get("/").status_code == 200
    shown = client.get(f"/tasks/{status.uuid}")
    assert shown.status_code == 200 and "Export" in shown.text
    assert page(shown).having("action", "http://testserver/sign-out")
    assert client.get("/api/v1/tasks/").status_code == 200
    # Neither is the cookie a bearer token, nor the token a cookie.
    replayed = served().get("/api/v1/tasks/", headers={"Authorization": f"Bearer {morsel.value}"})
    assert replayed.status_code == 401
    assert served(cookies={COOKIE: TOKEN}).get("/").status_code == 401
    # A server started with another token does not take it.
    assert served(token="other", cookies={COOKIE: morsel.value}).get("/").status_code == 401


def test_a_wrong_token_answers_the_sign_in_page_saying_so(served):
    client = served()
    answer = sign_in(client, token="wrong", next_url="/?state=Failed")
    assert answer.status_code == 401
    assert "set-cookie" not in answer.headers
    shown = page(answer)
    assert "That is not this server's token." in shown.text
    assert shown.having("role", "alert")
    assert shown.having("name", "next")[0]["value"] == "/?state=Failed"
    assert answer.headers["www-authenticate"] == 'Bearer realm="taskstatus"'
    assert client.get("/").status_code == 401
    # Whatever the form said, its next try goes on to a page of the app.
    for given in ({"token": "wrong"}, {"token": "wrong", "next": "https://evil.example/"}):
        again = client.post("/sign-in", data=given, headers=SAME_SITE)
        assert page(again).having("name", "next")[0]["value"] == "/"
    # The page's address, reloaded: the dashboard, which asks again (not a JSON 405).
    reloaded = client.get("/sign-in")
    assert (reloaded.status_code, reloaded.headers["location"]) == (303, "/")


def test_sign_out_clears_the_cookie(served):
    client = served()
    sign_in(client)
    assert client.get("/").status_code == 200
    answer = client.post("/sign-out", headers=SAME_SITE)
    assert answer.status_code == 303 and answer.headers["location"] == "/"
    morsel = cookie_of(answer)[COOKIE]
    assert morsel.value == "" and morsel["max-age"] == "0" and morsel["path"] == "/"
    assert COOKIE not in client.cookies
    assert client.get("/").status_code == 401


def test_another_site_can_neither_sign_in_nor_cancel_with_the_cookie(memory_tracker, served):
    status = publish(memory_tracker, user_id="7", name="Export")
    client = served()
    refused = client.post("/sign-in", data={"token": TOKEN, "next": "/"}, headers=CROSS_SITE)
    assert refused.status_code == 403
    assert "set-cookie" not in refused.headers

    sign_in(client)
    cancel = f"/api/v1/tasks/{status.uuid}/cancel"
    assert client.post(cancel, headers=CROSS_SITE).status_code == 403
    assert client.post(cancel, headers={"Origin": "https://evil.example"}).status_code == 403
    assert client.post("/sign-out", headers=CROSS_SITE).status_code == 403
    assert memory_tracker.get(status.uuid).state is State.PENDING
    assert client.post(cancel, headers=SAME_SITE).status_code == 200
    assert memory_tracker.get(status.uuid).state is State.CANCELED


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example/",
        "/\t/evil.example/",
        "javascript:alert(1)",
        "",
        "/ops-other/",
    ],
)
def test_a_sign_in_goes_on_only_to_a_page_of_the_app(memory_tracker, make_client, target):
    site = FastAPI()
    site.mount("/ops", serve_app(memory_tracker, TOKEN))
    client = make_client(site, follow_redirects=False)
    answer = sign_in(client, next_url=target, prefix="/ops")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/ops/"


def test_a_mounted_app_keeps_its_cookie_to_its_path_and_https(memory_tracker, make_client):
    site = FastAPI()
    site.mount("/ops", serve_app(memory_tracker, TOKEN))
    client = make_client(site, follow_redirects=False, base_url="https://testserver")
    form = page(client.get("/ops/?search=x"))
    assert form.having("action", "https://testserver/ops/sign-in")
    assert form.having("name", "next")[0]["value"] == "/ops/?search=x"
    answer = sign_in(client, next_url="/ops/?search=x", prefix="/ops")
    assert answer.headers["location"] == "/ops/?search=x"
    morsel = cookie_of(answer)[COOKIE]
    assert morsel["path"] == "/ops/" and morsel["secure"]
    assert client.get("/ops/?search=x").status_code == 200


def test_without_a_token_there_is_nothing_to_sign_in_to(served):
    client = served(token=None)
    shown = client.get("/")
    assert shown.status_code == 200
    assert not page(shown).having("action", "http://testserver/sign-out")
    assert sign_in(client).status_code in (404, 405)


def test_an_apps_sign_in_page_is_linked_with_the_page_to_come_back_to(memory_tracker, make_client):
    def link(sign_in_url: str, path: str) -> str | None:
        app = create_app(header_user, tracker=memory_tracker, sign_in_url=sign_in_url)
        answer = make_client(app).get(path)
        assert answer.status_code == 401
        shown = page(answer)
        assert not shown.having("name", "token")
        return next(a["href"] for a in shown.having("href") if "next=" in (a["href"] or ""))

    assert link("/login", "/?state=Failed") == "/login?next=%2F%3Fstate%3DFailed"
    assert link("/accounts/login/?lang=en", "/tasks/x") == (
        "/accounts/login/?lang=en&next=%2Ftasks%2Fx"
    )
    # Another origin's page needs the whole address to come back to.
    assert link("https://sso.example/login", "/") == (
        "https://sso.example/login?next=http%3A%2F%2Ftestserver%2F"
    )
    plain = page(make_client(memory_tracker).get("/"))
    assert "Sign in to the application" in plain.text
