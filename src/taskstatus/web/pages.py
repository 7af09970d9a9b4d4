"""The dashboard: server-rendered pages at the app's root, beside the API they are built on.

The pages read through the same :class:`~.routes._Api` as the REST routes (the same
permission rules, filters and keyset pages) and render the very payloads the API and its
streams send, so that the pages' script keeps them current from those streams alone. Every
page forbids inline script and style (:data:`CSP`); its script changes tasks through the
API's own POST and DELETE, under the API's cross-site defence.

No ``from __future__ import annotations``: FastAPI reads the routes' annotations at runtime.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit
from uuid import UUID

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, StrictUndefined

from .. import __version__
from ..exceptions import NotFound
from ..models import State, TaskStatus
from ..recorder import ERROR_ARTIFACT
from ..tracker import Tracker
from .errors import BadInput, Forbidden, challenge_headers
from .payloads import StatusOut, api_root, status_detail_out, status_out
from .permissions import allowed, visible_owners
from .principal import Authenticator, Principal, identify
from .routes import _Api, list_filters
from .signin import TokenAuthenticator, make_sign_in

__all__ = ["CSP", "make_pages"]

#: Rows on a page of the list.
PAGE_SIZE = 50
#: Children shown per container on a detail page (the API pages through all of them).
CHILDREN = 100
#: Levels of a detail page's tree of children.
DEPTH = 5
#: Nothing inline and nothing from elsewhere: a string that escaped escaping still cannot run.
CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'self'",
    ]
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
#: The list filters a page's form has; any other query parameter is ignored.
FILTERS = ("state", "search", "queue", "created_after", "created_before", "user_id")

templates = Environment(
    loader=PackageLoader("taskstatus.web", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _when(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def age(value: datetime, now: datetime | None = None) -> str:
    """How long ago, in its largest unit (the page's script says the same as time passes)."""
    seconds = max(0, int(((now or datetime.now(timezone.utc)) - value).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


templates.filters["when"] = _when
templates.filters["age"] = age


def _with_query(url: object, pairs: list[tuple[str, str]]) -> str:
    return f"{url}?{urlencode(pairs)}" if pairs else str(url)


def _here(request: Request) -> str:
    """The page's path and query: where a sign-in comes back to."""
    query = request.url.query
    return f"{request.url.path}?{query}" if query else request.url.path


def _sign_in_link(sign_in_url: str, request: Request) -> str:
    """The application's sign-in page with ``next=`` this page: a path when both are on
    one origin (what login views accept), the whole URL otherwise."""
    target = urlsplit(sign_in_url)
    same_origin = target.scheme in ("", request.url.scheme) and target.netloc in (
        "",
        request.url.netloc,
    )
    here = _here(request) if same_origin else str(request.url)
    joiner = "&" if target.query else "?"
    return f"{sign_in_url}{joiner}{urlencode({'next': here})}"


@dataclass
class Node:
    """A status on a detail page, with the children shown under it."""

    status: StatusOut
    children: list["Node"] = field(default_factory=list)
    more: bool = False


def _blank() -> dict[str, Any]:
    """The fields of a row template the script fills for a status it learns of."""
    return {
        "uuid": "",
        "name": "",
        "state": State.PENDING.value,
        "state_text": State.PENDING.value,
        "completed_steps": 0,
        "total_steps": 0,
        "progress": None,
        "attempts": 1,
        "created": None,
        "is_container": False,
        "url": "",
    }


class _Pages:
    def __init__(self, api: _Api, token_sign_in: bool, sign_in_url: str | None) -> None:
        self.api = api
        #: Whether the sign-in page has the token's form (``taskstatus serve``'s app).
        self.token_sign_in = token_sign_in
        self.sign_in_url = sign_in_url

    def render(
        self,
        request: Request,
        name: str,
        status_code: int = 200,
        headers: dict[str, str] | None = None,
        **context: Any,
    ) -> HTMLResponse:
        context.setdefault("principal", None)
        html = templates.get_template(name).render(
            request=request,
            static=lambda path: f"{request.url_for('static', path=path)}?v={__version__}",
            list_url=request.url_for("task_list"),
            task_url=lambda uuid: request.url_for("task_page", uuid=str(uuid)),
            now=datetime.now(timezone.utc),
            sign_out_url=request.url_for("sign_out") if self.token_sign_in else None,
            **context,
        )
        return HTMLResponse(html, status_code, headers={**HEADERS, **(headers or {})})

    def sign_in(
        self, request: Request, error: str | None = None, next_url: str | None = None
    ) -> HTMLResponse:
        """401: the token's form, a link to the application's sign-in page, or a word to
        sign in to the application. ``next_url``: where a sign-in goes on (this page)."""
        return self.render(
            request,
            "sign_in.html",
            401,
            challenge_headers(request),
            error=error,
            token_form=self.token_sign_in,
            next_url=next_url or _here(request),
            sign_in_link=(_sign_in_link(self.sign_in_url, request) if self.sign_in_url else None),
        )

    def not_found(self, request: Request, principal: Principal) -> HTMLResponse:
        return self.render(request, "not_found.html", 404, principal=principal)

    def task_list(self, request: Request, principal: Principal) -> Response:
        items = request.query_params.multi_items()
        if any(value == "" for _, value in items):
            # A submitted form names every field: keep the URL to the filters in use.
            query = urlencode([(k, v) for k, v in items if v != ""])
            return RedirectResponse(str(request.url.replace(query=query)), 303)
        given = request.query_params
        values = {name: given.get(name) for name in FILTERS}
        tracker = self.api.tracker()
        owners = visible_owners(tracker, principal)
        context: dict[str, Any] = {
            "principal": principal,
            "values": values,
            "states": [s.value for s in State],
            "owner_filter": owners is None or len(owners) > 1,
            "blank": _blank(),
            "first_page": "cursor" not in given,
        }
        in_use = [(k, v) for k, v in items if k in FILTERS]
        context["newest_url"] = _with_query(request.url_for("task_list"), in_use)
        try:
            filters = list_filters(
                state=given.getlist("state") or None,
                search=values["search"],
                parent="none",
                queue=values["queue"],
                created_after=values["created_after"],
                created_before=values["created_before"],
                user_id=values["user_id"],
            )
            page = self.api.page(request, principal, PAGE_SIZE, given.get("cursor"), **filters)
        except (BadInput, Forbidden) as exc:
            code = 403 if isinstance(exc, Forbidden) else 400
            return self.render(request, "list.html", code, error=str(exc), page=None, **context)
        cursor = [(k, v) for k, v in items if k == "cursor"]
        return self.render(
            request,
            "list.html",
            page=page,
            error=None,
            # Not by state: a row shown goes on changing when it leaves the state filtered
            # on (In Progress to Succeeded); the script adds new rows of the states only.
            events_url=_with_query(
                f"{api_root(request)}/events", [p for p in in_use if p[0] != "state"]
            ),
            selected_states=[s.value for s in filters["state"] or ()],
            poll_url=_with_query(
                f"{api_root(request)}/tasks/",
                [("parent", "none"), ("limit", str(PAGE_SIZE)), *in_use, *cursor],
            ),
            **context,
        )

    def task_page(self, request: Request, principal: Principal, uuid: str) -> HTMLResponse:
        try:
            tracker, status = self.api.visible(principal, UUID(uuid))
        except (ValueError, NotFound):
            return self.not_found(request, principal)
        out = status_detail_out(
            request, principal, status, tracker.artifacts(status), tracker.attempts(status)
        )
        parent = None
        if status.parent_uuid is not None:
            try:
                parent = self.api.visible(principal, status.parent_uuid)[1]
            except NotFound:
                parent = None
        return self.render(
            request,
            "detail.html",
            principal=principal,
            out=out,
            node=self.tree(request, principal, tracker, status, DEPTH),
            parent=parent,
            errors=[a.text for a in out.artifacts if a.name == ERROR_ARTIFACT and a.text],
            may_cancel=allowed(tracker, principal, "cancel", status),
            may_delete=allowed(tracker, principal, "delete", status),
            error_artifact=ERROR_ARTIFACT,
        )

    def tree(
        self,
        request: Request,
        principal: Principal,
        tracker: Tracker,
        status: TaskStatus,
        depth: int,
    ) -> Node:
        """A status and its newest children (those the caller may list, as the API's
        children route shows them), ``depth`` levels down."""
        node = Node(status_out(request, principal, status, ()))
        if not status.is_container or depth == 0:
            return node
        owners = visible_owners(tracker, principal)
        found = tracker.statuses(parent=status.uuid, user_ids=owners, limit=CHILDREN + 1)
        node.more = len(found) > CHILDREN
        # Oldest first: the order in which a chain's steps run.
        node.children = [
            self.tree(request, principal, tracker, child, depth - 1)
            for child in reversed(found[:CHILDREN])
        ]
        return node


def make_pages(
    authenticate: Authenticator,
    get_tracker: Callable[[], Tracker],
    sign_in_url: str | None = None,
) -> APIRouter:
    """The dashboard's pages for one authenticator and tracker; with ``taskstatus serve``'s
    token, the routes that sign in and out with it."""
    token = (
        authenticate
        if isinstance(authenticate, TokenAuthenticator) and authenticate.signs_in
        else None
    )
    pages = _Pages(_Api(authenticate, get_tracker), token is not None, sign_in_url)

    async def viewer(request: Request) -> Principal | None:
        return await identify(authenticate, request)

    Viewer = Annotated[Principal | None, Depends(viewer)]
    router = APIRouter(include_in_schema=False)

    @router.get("/", name="task_list", response_class=HTMLResponse)
    def task_list(request: Request, principal: Viewer) -> Response:
        if principal is None:
            return pages.sign_in(request)
        return pages.task_list(request, principal)

    @router.get("/tasks/{uuid}", name="task_page", response_class=HTMLResponse)
    def task_page(request: Request, principal: Viewer, uuid: str) -> Response:
        if principal is None:
            return pages.sign_in(request)
        return pages.task_page(request, principal, uuid)

    if token is not None:
        router.include_router(make_sign_in(token, pages.sign_in))
    return router
