"""The permission matrix of every route on statuses that real workers produced.

The queue test packages call :func:`check_every_route` with a task that succeeded leaving a
file, a text and a link, one that failed, and one still running; the app serves the process's
configured tracker, the one the workers write to.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

from taskstatus import State, TaskStatus
from taskstatus.web import create_app
from tests.web.conftest import ROOT, header_user

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


def check_every_route(
    owner: str,
    produced: TaskStatus,
    failed: TaskStatus,
    running: TaskStatus,
    file_content: bytes,
    wait_canceled: Callable[[], TaskStatus],
) -> None:
    """Owner, another user, a superuser and nobody on every route; then the owner cancels
    the running task through the API (``wait_canceled`` waits for the status the workers
    see) and a superuser deletes the one with the file."""
    app = create_app(header_user)
    other = f"{owner}-other"
    clients = {
        user: TestClient(app, headers={} if user is None else {"x-user": user})
        for user in (owner, other, ROOT, None)
    }
    mine = {s.task_id for s in (produced, failed, running)}
    (file,) = [a for a in produced.artifacts if a.file]
    for user, client in clients.items():
        sees = user in (owner, ROOT)
        listed = client.get("/api/v1/tasks/", params={"search": ""})
        details = [client.get(f"/api/v1/tasks/{s.uuid}") for s in (produced, failed, running)]
        children = client.get(f"/api/v1/tasks/{produced.uuid}/children")
        artifacts = client.get("/api/v1/artifacts/", params={"status": str(produced.uuid)})
        artifact = client.get(f"/api/v1/artifacts/{file.uuid}")
        download = client.get(f"/api/v1/artifacts/{file.uuid}/file")
        if user is None:
            answers = [listed, *details, children, artifacts, artifact, download]
            assert {a.status_code for a in answers} == {401}
            assert client.post(f"/api/v1/tasks/{running.uuid}/cancel").status_code == 401
            assert client.delete(f"/api/v1/tasks/{produced.uuid}").status_code == 401
            continue
        found = {s["task_id"] for s in listed.json()["results"]}
        assert (found & mine) == (mine if sees else set()), user
        assert [d.status_code for d in details] == [200 if sees else 404] * 3, user
        for answer in (children, artifacts, artifact, download):
            assert answer.status_code == (200 if sees else 404), (user, answer.request.url)
        if not sees:
            assert client.post(f"/api/v1/tasks/{running.uuid}/cancel").status_code == 404
            assert client.delete(f"/api/v1/tasks/{produced.uuid}").status_code == 404
            continue
        assert download.content == file_content
        assert children.json() == {"results": [], "next": None}
        body = details[0].json()
        assert (body["state"], body["progress"]) == ("Succeeded", 1.0)
        assert {a["name"] for a in body["artifacts"]} == {a.name for a in produced.artifacts}
        trace = details[1].json()["traceback"]
        assert (trace is not None) is (user == ROOT), user
    canceled = clients[owner].post(f"/api/v1/tasks/{running.uuid}/cancel")
    assert canceled.status_code == 200
    assert canceled.json()["state"] == "Canceled"
    assert wait_canceled().state is State.CANCELED
    assert clients[ROOT].delete(f"/api/v1/tasks/{produced.uuid}").status_code == 204
    assert clients[owner].get(f"/api/v1/artifacts/{file.uuid}/file").status_code == 404
    for client in clients.values():
        client.close()
