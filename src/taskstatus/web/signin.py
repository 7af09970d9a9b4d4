"""Signing in to the dashboard with ``taskstatus serve``'s token.

A browser cannot send ``Authorization: Bearer``, so the sign-in page takes the token in a form
and answers with a cookie. The cookie holds an HMAC of a fixed label keyed by the token, not the
token: whoever reads it cannot replay it as a bearer token, and it stops working when the
server's token changes. It is HttpOnly (no script reads it), SameSite=Strict (no other site's
request carries it), Secure over https, and scoped to the app's path, so a mounted app's cookie
stays with it. Signing in and out are POSTs under the API's cross-site check
(:mod:`taskstatus.web.csrf`), so no other site can sign a browser in to its own account.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from urllib.parse import parse_qsl

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response
from starlette.requests import Request

from .csrf import check_same_origin
from .errors import BadInput
from .principal import Principal

__all__ = ["COOKIE", "OPERATOR", "TokenAuthenticator", "local_target", "make_sign_in"]

#: Who a request with the right token (or any request, without one) is.
OPERATOR = Principal("operator", is_superuser=True)
#: The sign-in cookie's name.
COOKIE = "taskstatus_signin"
#: What the cookie's HMAC signs: fixed, so the token alone decides the cookie.
_LABEL = b"taskstatus dashboard sign-in"
#: A sign-in form is a token and a path: anything longer is not one.
_MAX_FORM = 8192
#: A path of this origin as a browser reads it: not ``//host`` or ``/\host`` (another
#: origin), no whitespace or control character (which browsers strip, making ``/\t/host``).
_LOCAL_PATH = re.compile(r"/(?![/\\])[!-\[\]-~]*")


class TokenAuthenticator:
    """``taskstatus serve``'s authenticator: ``Authorization: Bearer <token>``, or the
    sign-in cookie, is the operator; without a token every caller is."""

    def __init__(self, token: str | None) -> None:
        self._token = None if token is None else token.encode()
        self._cookie = (
            None if self._token is None else hmac.new(self._token, _LABEL, hashlib.sha256).digest()
        )

    @property
    def signs_in(self) -> bool:
        """Whether callers need the token (and browsers the sign-in form)."""
        return self._token is not None

    @property
    def cookie(self) -> str:
        """The sign-in cookie's value."""
        assert self._cookie is not None, "no token, no sign-in"
        return self._cookie.hex()

    def accepts(self, given: str) -> bool:
        """Whether ``given`` is the token, in a time that does not depend on how much of it
        is right."""
        return self._token is not None and hmac.compare_digest(given.encode(), self._token)

    async def __call__(self, request: Request) -> Principal | None:
        # Async, as it does no I/O: a plain function would cost every request a hop to a
        # worker thread.
        if self._token is None:
            return OPERATOR
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self.accepts(given.strip()):
            return OPERATOR
        cookie = request.cookies.get(COOKIE, "")
        if hmac.compare_digest(cookie.encode(), self.cookie.encode()):
            return OPERATOR
        return None


def local_target(target: str | None, home: str) -> str:
    """``target`` when it is a path of this app (under ``home``, its root path), else
    ``home``: a sign-in never sends the browser to another site."""
    if target and _LOCAL_PATH.fullmatch(target) and target.startswith(home):
        return target
    return home


async def _form(request: Request) -> dict[str, str]:
    """The fields of an urlencoded form (without a multipart parser to depend on)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM:
            raise BadInput("the form is too large")
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


def make_sign_in(
    auth: TokenAuthenticator, sign_in_page: Callable[[Request, str, str], Response]
) -> APIRouter:
    """``POST sign-in`` (the form's token and ``next``) and ``POST sign-out``.
    ``sign_in_page(request, error, next)``: the page that says the token was wrong, whose
    form goes on to ``next``."""
    router = APIRouter(include_in_schema=False)

    def set_cookie(request: Request, response: Response, value: str | None) -> None:
        """Set the cookie to ``value``, or expire it (None)."""
        response.set_cookie(
            COOKIE,
            value or "",
            max_age=None if value else 0,
            expires=None if value else 0,
            path=request.url_for("task_list").path,
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )

    @router.post("/sign-in", name="sign_in")
    async def sign_in(request: Request) -> Response:
        check_same_origin(request, request.app.state.trusted_origins)
        form = await _form(request)
        target = local_target(form.get("next"), request.url_for("task_list").path)
        if not auth.accepts(form.get("token", "")):
            return sign_in_page(request, "That is not this server's token.", target)
        response = RedirectResponse(target, 303)
        set_cookie(request, response, auth.cookie)
        return response

    @router.get("/sign-in")
    def sign_in_again(request: Request) -> Response:
        """The address of the page a wrong token answered, reloaded or bookmarked: the
        dashboard, which asks for the token again."""
        return RedirectResponse(request.url_for("task_list").path, 303)

    @router.post("/sign-out", name="sign_out")
    def sign_out(request: Request) -> Response:
        check_same_origin(request, request.app.state.trusted_origins)
        response = RedirectResponse(request.url_for("task_list").path, 303)
        set_cookie(request, response, None)
        return response

    return router
