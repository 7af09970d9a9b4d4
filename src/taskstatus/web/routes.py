"""The routes under ``/api/v1``: statuses and artifacts, each checked against the caller.

Every read and change goes through the Tracker's public API, so plugins see a cancel from the
API exactly like one from Python. Handlers are plain functions: FastAPI runs them in a worker
thread, since the store's calls block.

No ``from __future__ import annotations`` here: FastAPI reads the routes' annotations at
runtime, and the ``Caller`` dependency they name is local to the function defining them.
"""

import mimetypes
import re
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime, timezone
from typing import Annotated, Any, BinaryIO
from urllib.parse import quote
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.responses import StreamingResponse
from fastapi.routing import APIRoute

from ..exceptions import NotFound
from ..models import MAX_TEXT, Artifact, State, TaskStatus, check_key
from ..store import ANY
from ..tracker import Tracker
from . import cursor as cursors
from .csrf import check_same_origin
from .errors import CHANGE_ERRORS, ERRORS, BadInput, Forbidden, Unauthenticated
from .events import add_event_routes
from .payloads import (
    ArtifactOut,
    ArtifactPage,
    StatusDetailOut,
    StatusOut,
    StatusPage,
    artifact_out,
    artifacts_out,
    json_response,
    status_detail_out,
    status_out,
    statuses_out,
)
from .permissions import allowed, visible_owners
from .principal import Authenticator, Principal, identify

__all__ = ["list_filters", "make_router"]

#: Bytes read from the artifact storage per chunk of a download.
CHUNK = 64 * 1024
MAX_LIMIT = 500

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Results per page (1-500).")]
Cursor = Annotated[
    str | None,
    Query(
        pattern="^[A-Za-z0-9_-]+$",
        description="Where the page starts: taken from a `next` link.",
    ),
]
DATE_TIME = {"format": "date-time"}
#: What a ``state`` may be: a value or a member name (names in any case are accepted too).
STATE_NAMES = [spelling for s in State for spelling in (s.value, s.name)]
#: A status uuid (the form UUID() reads), or ``none``.
PARENT_PATTERN = (
    "^([Nn][Oo][Nn][Ee]|[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?"
    "[0-9a-fA-F]{12})$"
)


def _text(value: str | None, name: str, limit: int | None = MAX_TEXT) -> str | None:
    """A text filter the stores compare alike (the query API's rule), else 400."""
    if value is None:
        return None
    try:
        return check_key(value, name, limit)
    except ValueError as exc:
        raise BadInput(str(exc)) from None


def _utc(text: str | None, name: str) -> datetime | None:
    """An aware UTC time from ISO 8601; one given without an offset is taken as UTC.

    Parsed here rather than by pydantic, which also takes a number for seconds since 1970:
    ``created_before=0.5`` is more likely a mistake than a time in 1970."""
    if text is None:
        return None
    try:
        # Python 3.10's fromisoformat does not read a "Z".
        value = datetime.fromisoformat(re.sub(r"[Zz]$", "+00:00", text.strip()))
    except ValueError:
        raise BadInput(
            f"{name} must be an ISO 8601 date and time (2026-01-31T12:00:00+00:00), got {text!r}"
        ) from None
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    try:
        return value.astimezone(timezone.utc)
    except OverflowError:
        raise BadInput(f"{name} {value.isoformat()} is out of range") from None


def _states(values: list[str] | None) -> list[State] | None:
    if not values:
        return None
    try:
        return [State.parse(v) for v in values]
    except ValueError as exc:
        raise BadInput(str(exc)) from None


def _parent(value: str | None) -> Any:
    if value is None:
        return ANY
    # Its form is checked by PARENT_PATTERN.
    return None if value.lower() == "none" else UUID(value)


def _after(value: str | None) -> tuple[datetime, UUID] | None:
    try:
        return None if value is None else cursors.decode(value)
    except cursors.BadCursor as exc:
        raise BadInput(str(exc)) from None


def _next(request: Request, page: list[Any], limit: int) -> str | None:
    """The link of the next page (this one's query with a new cursor), if there is one:
    ``page`` was read with one row more than the limit to know."""
    if len(page) <= limit:
        return None
    last = page[limit - 1]
    return str(request.url.include_query_params(cursor=cursors.encode(last.created, last.uuid)))


def _download(artifact: Artifact, stream: BinaryIO) -> StreamingResponse:
    """The file of an artifact, streamed chunk by chunk (never read whole)."""
    filename = artifact.filename or "download"
    headers = {
        # RFC 6266: an ASCII fallback, and the real name in UTF-8 for every current browser.
        "Content-Disposition": (
            f"attachment; filename=\"{_ascii(filename)}\"; filename*=UTF-8''{quote(filename)}"
        ),
        # Served from the API's own origin: never let a browser guess HTML from the content.
        "X-Content-Type-Options": "nosniff",
    }
    size = _size(stream)
    if size is not None:
        headers["Content-Length"] = str(size)

    def chunks() -> Iterator[bytes]:
        try:
            while chunk := stream.read(CHUNK):
                yield chunk
        finally:
            stream.close()

    media_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    return StreamingResponse(chunks(), media_type=media_type, headers=headers)


def _ascii(filename: str) -> str:
    """The plain-ASCII ``filename=`` for old clients (``filename*`` has the real one)."""
    return "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename
    )


def _size(stream: BinaryIO) -> int | None:
    """The file's length, where its storage can tell without reading it."""
    try:
        size = stream.seek(0, 2)
        stream.seek(0)
    except (OSError, ValueError):
        return None
    return size


class _Api:
    """What the routes share: who the caller is, what the caller may see, a page of a list."""

    def __init__(self, authenticate: Authenticator, get_tracker: Callable[[], Tracker]) -> None:
        self.authenticate = authenticate
        self.tracker = get_tracker

    async def caller(self, request: Request) -> Principal:
        principal = await identify(self.authenticate, request)
        if principal is None:
            raise Unauthenticated("authentication required")
        return principal

    def visible(self, principal: Principal, uuid: UUID) -> tuple[Tracker, TaskStatus]:
        """The status, if the caller may see it; NotFound (404) alike when it is missing
        and when it is someone else's, so that ids of other users' tasks leak nothing."""
        tracker = self.tracker()
        status = tracker.get(uuid)
        if not allowed(tracker, principal, "view", status):
            raise NotFound(f"no task status with uuid {uuid}")
        return tracker, status

    def visible_artifact(self, principal: Principal, uuid: UUID) -> tuple[Tracker, Artifact]:
        tracker = self.tracker()
        artifact = tracker.get_artifact(uuid)
        try:
            self.visible(principal, artifact.status_uuid)
        except NotFound:
            raise NotFound(f"no artifact with uuid {uuid}") from None
        return tracker, artifact

    def page(
        self,
        request: Request,
        principal: Principal,
        limit: int,
        cursor: str | None,
        **filters: Any,
    ) -> StatusPage:
        """A page of statuses, filtered by the owners the caller may list in the query."""
        tracker = self.tracker()
        owners = self.owners(tracker, principal, filters.get("user_id"))
        statuses = tracker.statuses(
            user_ids=owners, limit=limit + 1, after=_after(cursor), **filters
        )
        shown = statuses[:limit]
        return StatusPage(
            results=statuses_out(request, principal, shown, tracker.artifacts_of(shown)),
            next=_next(request, statuses, limit),
        )

    def owners(
        self, tracker: Tracker, principal: Principal, user_id: str | None
    ) -> list[str] | None:
        """The owners whose statuses the caller may list (None: every owner); 403 when the
        ``user_id`` filter names one beyond them."""
        owners = visible_owners(tracker, principal)
        if user_id is not None and owners is not None and user_id not in owners:
            raise Forbidden("the user_id filter names an owner whose tasks you cannot list")
        return owners


def list_filters(
    *,
    state: list[str] | None = None,
    search: str | None = None,
    parent: str | None = None,
    queue: str | None = None,
    task_class: str | None = None,
    created_after: str | None = None,
    created_before: str | None = None,
    user_id: str | None = None,
) -> dict[str, Any]:
    """The filters of a list (of its stream of changes, of the dashboard's list), as
    ``Tracker.query`` takes them; 400 for one it cannot use. The ``user_id`` filter is
    checked against the caller where the owners are read (``_Api.owners``)."""
    return {
        "state": _states(state),
        "search": _text(search, "search", limit=None),
        "queue": _text(queue, "queue"),
        "task_class": _text(task_class, "task_class"),
        "created_after": _utc(created_after, "created_after"),
        "created_before": _utc(created_before, "created_before"),
        "user_id": _text(user_id, "user_id"),
        "parent": _parent(parent),
    }


async def _list_filters(
    state: Annotated[
        list[str] | None,
        Query(
            description="A state (value or member name); repeat for any of several.",
            json_schema_extra={"items": {"type": "string", "enum": STATE_NAMES}},
        ),
    ] = None,
    search: Annotated[str | None, Query(description="In the name, any case.")] = None,
    parent: Annotated[
        str | None,
        Query(
            pattern=PARENT_PATTERN,
            description="A container's uuid, or `none` for top level only.",
        ),
    ] = None,
    queue: str | None = None,
    task_class: str | None = None,
    created_after: Annotated[str | None, Query(json_schema_extra=DATE_TIME)] = None,
    created_before: Annotated[str | None, Query(json_schema_extra=DATE_TIME)] = None,
    user_id: Annotated[str | None, Query(description="An owner (superusers).")] = None,
) -> dict[str, Any]:
    """:func:`list_filters` as the dependency shared by ``tasks/`` and ``events``. Async, as
    it only parses (a plain function would run in a worker thread of its own)."""
    return list_filters(
        state=state,
        search=search,
        parent=parent,
        queue=queue,
        task_class=task_class,
        created_after=created_after,
        created_before=created_before,
        user_id=user_id,
    )


async def _same_origin(request: Request) -> None:
    check_same_origin(request, request.app.state.trusted_origins)


def _query_names(dependant: Dependant) -> set[str]:
    """The query parameters of a route and of its dependencies (the list filters)."""
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


async def _known_query(request: Request) -> None:
    """Refuse query parameters a route does not have: a misspelt filter (``?stat=Failed``)
    would otherwise answer everything as if it had matched."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    params = _query_names(route.dependant)
    unknown = set(request.query_params) - params
    if unknown:
        known = ", ".join(sorted(params)) or "none"
        raise BadInput(f"unknown query parameter(s) {', '.join(sorted(unknown))}; known: {known}")


def make_router(authenticate: Authenticator, get_tracker: Callable[[], Tracker]) -> APIRouter:
    """The API's routes for one authenticator and tracker."""
    api = _Api(authenticate, get_tracker)
    router = APIRouter(
        prefix="/api/v1",
        responses=ERRORS,  # type: ignore[arg-type]
        dependencies=[Depends(_known_query)],
    )
    _task_routes(router, api, _list_filters)
    add_event_routes(router, api, _list_filters)
    _artifact_routes(router, api)
    return router


def _task_routes(
    router: APIRouter, api: _Api, read_filters: Callable[..., Awaitable[dict[str, Any]]]
) -> None:
    Caller = Annotated[Principal, Depends(api.caller)]
    Filters = Annotated[dict[str, Any], Depends(read_filters)]

    @router.get(
        "/tasks/",
        response_model=StatusPage,
        summary="List statuses, newest first",
        responses=CHANGE_ERRORS,  # type: ignore[arg-type]  # 403: user_id beyond the caller's
    )
    def list_tasks(
        request: Request,
        principal: Caller,
        filters: Filters,
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> Response:
        return json_response(api.page(request, principal, limit, cursor, **filters))

    @router.get(
        "/tasks/{uuid}", response_model=StatusDetailOut, summary="One status, with its retries"
    )
    def get_task(request: Request, principal: Caller, uuid: UUID) -> Response:
        tracker, status = api.visible(principal, uuid)
        return json_response(
            status_detail_out(
                request, principal, status, tracker.artifacts(status), tracker.attempts(status)
            )
        )

    @router.get(
        "/tasks/{uuid}/children",
        response_model=StatusPage,
        summary="The statuses of a container's children, newest first",
    )
    def get_children(
        request: Request, principal: Caller, uuid: UUID, limit: Limit = 50, cursor: Cursor = None
    ) -> Response:
        _, status = api.visible(principal, uuid)
        return json_response(api.page(request, principal, limit, cursor, parent=status.uuid))

    @router.post(
        "/tasks/{uuid}/cancel",
        response_model=StatusOut,
        summary="Cancel a task (and a container's children)",
        responses=CHANGE_ERRORS,  # type: ignore[arg-type]
        dependencies=[Depends(_same_origin)],
    )
    def cancel_task(
        request: Request,
        principal: Caller,
        uuid: UUID,
        terminate: Annotated[
            bool, Query(description="Ask the queue to stop running work (superusers).")
        ] = False,
    ) -> Response:
        tracker, status = api.visible(principal, uuid)
        if not allowed(tracker, principal, "cancel", status):
            raise Forbidden(f"you may not cancel task status {uuid}")
        if terminate and not principal.is_superuser:
            raise Forbidden("terminate is for superusers only")
        status = tracker.cancel(status, terminate=terminate)
        return json_response(status_out(request, principal, status, tracker.artifacts(status)))

    @router.delete(
        "/tasks/{uuid}",
        status_code=204,
        response_class=Response,
        summary="Delete a status, its children, artifacts and files",
        responses=CHANGE_ERRORS,  # type: ignore[arg-type]
        dependencies=[Depends(_same_origin)],
    )
    def delete_task(principal: Caller, uuid: UUID) -> Response:
        tracker, status = api.visible(principal, uuid)
        if not allowed(tracker, principal, "delete", status):
            raise Forbidden(f"you may not delete task status {uuid}")
        tracker.delete(status)
        return Response(status_code=204)


def _artifact_routes(router: APIRouter, api: _Api) -> None:
    Caller = Annotated[Principal, Depends(api.caller)]

    @router.get("/artifacts/", response_model=ArtifactPage, summary="List artifacts, newest first")
    def list_artifacts(
        request: Request,
        principal: Caller,
        status: Annotated[UUID | None, Query(description="Only this status's.")] = None,
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> Response:
        if status is not None:
            # Its artifacts, whoever the permission hook lets see the status.
            tracker, _ = api.visible(principal, status)
            owners = None
        else:
            tracker = api.tracker()
            owners = visible_owners(tracker, principal)
        found = tracker.query_artifacts(
            status=status, user_ids=owners, limit=limit + 1, after=_after(cursor)
        )
        page = ArtifactPage(
            results=artifacts_out(request, found[:limit]), next=_next(request, found, limit)
        )
        return json_response(page)

    @router.get("/artifacts/{uuid}", response_model=ArtifactOut, summary="One artifact")
    def get_artifact(request: Request, principal: Caller, uuid: UUID) -> Response:
        return json_response(artifact_out(request, api.visible_artifact(principal, uuid)[1]))

    @router.get(
        "/artifacts/{uuid}/file",
        response_class=StreamingResponse,
        summary="Download an artifact's file",
        responses={200: {"content": {"application/octet-stream": {}}}},
    )
    def download_artifact(principal: Caller, uuid: UUID) -> StreamingResponse:
        tracker, artifact = api.visible_artifact(principal, uuid)
        if artifact.file is None:
            raise NotFound(f"artifact {uuid} has no file")
        try:
            stream = tracker.open_artifact(artifact)
        except FileNotFoundError:
            raise NotFound(f"the file of artifact {uuid} is missing") from None
        return _download(artifact, stream)
