"""What the API answers: statuses and artifacts as JSON, with absolute links.

Links are built from the request's own URL and ``root_path``, so they stay right when the app
is mounted under a prefix (``parent.mount("/tasks", app)``) or served behind a proxy with a
root path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from uuid import UUID

from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import Response

from ..models import Artifact, Attempt, State, TaskStatus
from .principal import Principal

__all__ = [
    "ArtifactOut",
    "ArtifactPage",
    "AttemptOut",
    "StatusDetailOut",
    "StatusOut",
    "StatusPage",
    "api_root",
    "artifact_out",
    "artifacts_out",
    "json_response",
    "status_detail_out",
    "status_out",
    "statuses_out",
]

API = "/api/v1"


class ArtifactOut(BaseModel):
    """Something a task produced: exactly one of ``text``, ``url`` and ``file`` is set."""

    uuid: UUID
    status: UUID = Field(description="The uuid of the status it belongs to.")
    name: str
    text: str | None
    url: str | None = Field(description="A link the task produced (http or https).")
    file: str | None = Field(description="Download link of the stored file, or null.")
    filename: str | None
    created: datetime
    modified: datetime


class StatusOut(BaseModel):
    """One task or container (chain, group, ...), with its artifacts."""

    uuid: UUID
    url: str = Field(description="This status's own link.")
    task_id: str
    queue: str
    task_class: str
    name: str
    user_id: str | None
    parent: UUID | None = Field(description="The uuid of the container it belongs to.")
    is_container: bool
    sequential: bool = Field(
        description="A container whose children run one after another (a chain), not side "
        "by side (a group)."
    )
    state: State
    state_text: str = Field(description="A running task's custom stage, else the state.")
    completed_steps: int
    total_steps: int
    progress: float | None = Field(
        ge=0, le=1, description="completed_steps / total_steps, null while nothing is known."
    )
    attempts: int
    created: datetime
    modified: datetime
    started_at: datetime | None
    finished_at: datetime | None
    traceback: str | None = Field(description="Failure detail, shown to superusers only.")
    artifacts: list[ArtifactOut]


class AttemptOut(BaseModel):
    """A run of the task that ended in a retry."""

    number: int = Field(ge=1, description="1 for the first run.")
    started_at: datetime | None = Field(description="Null if it never started or is unknown.")
    retried_at: datetime
    message: str | None = Field(description="What went wrong, as an Error artifact says it.")


class StatusDetailOut(StatusOut):
    """One status as its own link shows it: with its retry history (lists leave it out)."""

    retries: list[AttemptOut] = Field(
        description="The attempts that ended in a retry, oldest first."
    )


class StatusPage(BaseModel):
    results: list[StatusOut]
    next: str | None = Field(description="The link of the next page, null on the last.")


class ArtifactPage(BaseModel):
    results: list[ArtifactOut]
    next: str | None = Field(description="The link of the next page, null on the last.")


def api_root(request: Request) -> str:
    """The absolute URL of ``/api/v1`` of this app, wherever it is mounted: every link is this
    and a path (read once per page: building a URL costs more than a status's payload)."""
    root = request.scope.get("root_path", "").rstrip("/")
    return str(request.url.replace(path=f"{root}{API}", query=""))


def json_response(payload: BaseModel) -> Response:
    """The payload as JSON, exactly as FastAPI would answer it, serialised in the route's own
    worker thread: returned as a model, it would be validated again in a thread of its own and
    serialised on the event loop, stalling every other request meanwhile."""
    return Response(payload.model_dump_json(), media_type="application/json")


def progress(status: TaskStatus) -> float | None:
    if status.total_steps > 0:
        return min(1.0, status.completed_steps / status.total_steps)
    return 1.0 if status.state is State.SUCCEEDED else None


def artifact_out(request: Request, artifact: Artifact) -> ArtifactOut:
    return _artifact_out(api_root(request), artifact)


def artifacts_out(request: Request, artifacts: Sequence[Artifact]) -> list[ArtifactOut]:
    root = api_root(request)
    return [_artifact_out(root, a) for a in artifacts]


def _artifact_out(root: str, artifact: Artifact) -> ArtifactOut:
    # Stored ones have both times.
    assert artifact.created is not None
    assert artifact.modified is not None
    return ArtifactOut(
        uuid=artifact.uuid,
        status=artifact.status_uuid,
        name=artifact.name,
        text=artifact.text,
        url=artifact.url,
        file=f"{root}/artifacts/{artifact.uuid}/file" if artifact.file else None,
        filename=artifact.filename,
        created=artifact.created,
        modified=artifact.modified,
    )


def status_out(
    request: Request,
    principal: Principal,
    status: TaskStatus,
    artifacts: Sequence[Artifact],
) -> StatusOut:
    return _status_out(api_root(request), principal, status, artifacts)


def _status_out(
    root: str, principal: Principal, status: TaskStatus, artifacts: Sequence[Artifact]
) -> StatusOut:
    # Stored ones have both times.
    assert status.created is not None
    assert status.modified is not None
    return StatusOut(
        uuid=status.uuid,
        url=f"{root}/tasks/{status.uuid}",
        task_id=status.task_id,
        queue=status.queue,
        task_class=status.task_class,
        name=status.name,
        user_id=status.user_id,
        parent=status.parent_uuid,
        is_container=status.is_container,
        sequential=status.sequential,
        state=status.state,
        state_text=status.state_text,
        completed_steps=status.completed_steps,
        total_steps=status.total_steps,
        progress=progress(status),
        attempts=status.attempts,
        created=status.created,
        modified=status.modified,
        started_at=status.started_at,
        finished_at=status.finished_at,
        traceback=status.traceback if principal.is_superuser else None,
        artifacts=[_artifact_out(root, a) for a in artifacts],
    )


def status_detail_out(
    request: Request,
    principal: Principal,
    status: TaskStatus,
    artifacts: Sequence[Artifact],
    attempts: Sequence[Attempt],
) -> StatusDetailOut:
    return StatusDetailOut(
        **status_out(request, principal, status, artifacts).model_dump(),
        retries=[
            AttemptOut(
                number=a.number, started_at=a.started_at, retried_at=a.retried_at, message=a.message
            )
            for a in attempts
        ],
    )


def statuses_out(
    request: Request,
    principal: Principal,
    statuses: Sequence[TaskStatus],
    artifacts: Mapping[UUID, Sequence[Artifact]],
) -> list[StatusOut]:
    root = api_root(request)
    return [_status_out(root, principal, s, artifacts.get(s.uuid, ())) for s in statuses]
