"""The API on statuses that real workers produced: every route for each caller, and live events.

The queue test packages call :func:`check_every_route` with a task that succeeded leaving a
file, a text and a link, one that failed, and one still running, and
:func:`check_live_events` with a way to start a task that counts. The app serves the process's
configured tracker, the one the workers write to, from a real server: the event streams need
one (see :mod:`tests.web.live`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from uuid import UUID

import httpx
import pytest

import taskstatus
from taskstatus import State, TaskStatus
from taskstatus.web import create_app
from taskstatus.web import events as web_events
from tests.helpers import publish
from tests.waiting import TIMEOUT, find, poll, wait_state
from tests.web.conftest import ROOT, header_user
from tests.web.live import Event, LiveServer, as_event, client, events, live_server, until

EVERYTHING = "/api/v1/events"


@contextlib.contextmanager
def workers_server() -> Iterator[LiveServer]:
    """The API on the process's tracker, served live. Its streams read the store often, and
    send no heartbeat within TIMEOUT: a stream that stays quiet fails the read waiting on it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(web_events, "POLL_INTERVAL", 0.1)
        patch.setattr(web_events, "HEARTBEAT", 2 * TIMEOUT)
        with live_server(create_app(header_user)) as server:
            yield server


def _task_events(status: TaskStatus) -> str:
    return f"/api/v1/tasks/{status.uuid}/events"


def _open(
    stack: contextlib.ExitStack, http: httpx.Client, url: str, since: str | None = None
) -> Iterator[Event]:
    """The events of a stream (resumed after ``since``) that stays open until ``stack``
    closes."""
    headers = {} if since is None else {"Last-Event-ID": since}
    response = stack.enter_context(http.stream("GET", url, headers=headers))
    assert response.status_code == 200, (url, response.read())
    return events(response)


def _until_states(stream: Iterator[Event], states: dict[str, str], what: str) -> list[Event]:
    """The events of ``stream`` until each task id of ``states`` has shown its state there."""
    latest: dict[str, str] = {}

    def done(event: Event) -> bool:
        assert event.data is not None
        latest[event.data["task_id"]] = event.data["state"]
        return all(latest.get(task_id) == state for task_id, state in states.items())

    return until(stream, done, what)


def _check_reads(
    http: httpx.Client,
    user: str,
    produced: TaskStatus,
    failed: TaskStatus,
    running: TaskStatus,
    file: UUID,
    file_content: bytes,
) -> None:
    """Every read of the owner or a superuser, a finished task's stream included: its status,
    then the end."""
    mine = {s.task_id for s in (produced, failed, running)}
    listed = http.get("/api/v1/tasks/", params={"search": ""})
    assert mine <= {s["task_id"] for s in listed.json()["results"]}, user
    details = [http.get(f"/api/v1/tasks/{s.uuid}") for s in (produced, failed, running)]
    children = http.get(f"/api/v1/tasks/{produced.uuid}/children")
    artifacts = http.get("/api/v1/artifacts/", params={"status": str(produced.uuid)})
    artifact = http.get(f"/api/v1/artifacts/{file}")
    download = http.get(f"/api/v1/artifacts/{file}/file")
    for answer in (*details, children, artifacts, artifact, download):
        assert answer.status_code == 200, (user, answer.request.url)
    assert download.content == file_content
    assert children.json() == {"results": [], "next": None}
    body = details[0].json()
    assert (body["state"], body["progress"]) == ("Succeeded", 1.0)
    assert {a["name"] for a in body["artifacts"]} == {a.name for a in produced.artifacts}
    trace = details[1].json()["traceback"]
    assert (trace is not None) is (user == ROOT), user
    for status, detail in zip((produced, failed), details[:2], strict=True):
        with http.stream("GET", _task_events(status)) as r:
            assert r.status_code == 200
            assert [e.data for e in events(r)] == [as_event(detail.json())], user


def _check_hidden(
    http: httpx.Client,
    user: str,
    produced: TaskStatus,
    failed: TaskStatus,
    running: TaskStatus,
    file: UUID,
) -> None:
    """Another user: the owner's statuses are not listed, and every other route is 404."""
    mine = {s.task_id for s in (produced, failed, running)}
    listed = http.get("/api/v1/tasks/", params={"search": ""})
    assert not mine & {s["task_id"] for s in listed.json()["results"]}
    artifacts = http.get("/api/v1/artifacts/", params={"status": str(produced.uuid)})
    answers = [
        artifacts,
        *(http.get(f"/api/v1/tasks/{s.uuid}") for s in (produced, failed, running)),
        *(http.get(_task_events(s)) for s in (produced, failed, running)),
        http.get(f"/api/v1/tasks/{produced.uuid}/children"),
        http.get(f"/api/v1/artifacts/{file}"),
        http.get(f"/api/v1/artifacts/{file}/file"),
        http.post(f"/api/v1/tasks/{running.uuid}/cancel"),
        http.delete(f"/api/v1/tasks/{produced.uuid}"),
    ]
    assert {a.status_code for a in answers} == {404}, [
        (a.request.url, a.status_code) for a in answers
    ]


def check_every_route(
    owner: str,
    since: str,
    produced: TaskStatus,
    failed: TaskStatus,
    running: TaskStatus,
    file_content: bytes,
    wait_canceled: Callable[[], TaskStatus],
) -> None:
    """Owner, another user, a superuser and nobody on every route; then the owner cancels
    the running task through the API (``wait_canceled`` waits for the status the workers
    see) and a superuser deletes the one with the file.

    The streams of everything resume from ``since``, a change position from before the tasks
    ran: the owner's and the superuser's get the three statuses and the cancel, the other
    user's nothing of them."""
    other = f"{owner}-other"
    (file,) = [a for a in produced.artifacts if a.file]
    with workers_server() as server, contextlib.ExitStack() as stack:
        clients = {user: stack.enter_context(client(server, user)) for user in (owner, other, ROOT)}
        anonymous = stack.enter_context(client(server))
        answers = [
            anonymous.get(url)
            for url in (
                "/api/v1/tasks/",
                *(f"/api/v1/tasks/{s.uuid}" for s in (produced, failed, running)),
                f"/api/v1/tasks/{produced.uuid}/children",
                f"/api/v1/artifacts/?status={produced.uuid}",
                f"/api/v1/artifacts/{file.uuid}",
                f"/api/v1/artifacts/{file.uuid}/file",
                *(_task_events(s) for s in (produced, running)),
                EVERYTHING,
            )
        ]
        answers.append(anonymous.post(f"/api/v1/tasks/{running.uuid}/cancel"))
        answers.append(anonymous.delete(f"/api/v1/tasks/{produced.uuid}"))
        assert {a.status_code for a in answers} == {401}, [a.request.url for a in answers]

        for user, http in clients.items():
            if user == other:
                _check_hidden(http, user, produced, failed, running, file.uuid)
            else:
                _check_reads(http, user, produced, failed, running, file.uuid, file_content)

        everything = {u: _open(stack, http, EVERYTHING, since) for u, http in clients.items()}
        following = {u: _open(stack, clients[u], _task_events(running)) for u in (owner, ROOT)}
        for user, stream in following.items():
            first = until(stream, lambda e: True, "the running task's status")[0].data
            assert first["state"] == "In Progress", (user, first)

        canceled = clients[owner].post(f"/api/v1/tasks/{running.uuid}/cancel")
        assert canceled.status_code == 200
        assert canceled.json()["state"] == "Canceled"
        assert wait_canceled().state is State.CANCELED
        final = {produced.task_id: "Succeeded", failed.task_id: "Failed"}
        final[running.task_id] = "Canceled"
        for user, stream in following.items():
            got = until(stream, lambda e: e.data["state"] == "Canceled", "the cancel")
            assert {e.data["task_id"] for e in got} == {running.task_id}, user
            assert list(stream) == [], user  # the stream ends with the task
            got = _until_states(everything[user], final, f"{user}'s statuses")
            if user == owner:
                assert {e.data["user_id"] for e in got} == {owner}
        # Written after all of the owner's changes: had any reached the other user's stream,
        # it would have come before this one.
        theirs = publish(taskstatus.get_tracker(), user_id=other).task_id
        got = until(everything[other], lambda e: e.data["task_id"] == theirs, "their own")
        assert [e.data["task_id"] for e in got] == [theirs]

        assert clients[ROOT].delete(f"/api/v1/tasks/{produced.uuid}").status_code == 204
        assert clients[owner].get(f"/api/v1/artifacts/{file.uuid}/file").status_code == 404


def _counting(event: Event) -> bool:
    assert event.data is not None
    return event.data["state"] == "In Progress" and event.data["completed_steps"] >= 1


def check_live_events(owner: str, count: Callable[[int, float], str]) -> None:
    """A client follows a task's progress to its end; another that drops and reconnects
    with Last-Event-ID gets what it missed; a third user receives nothing of either.

    ``count(n, delay)`` starts a task of ``owner`` on a real worker that counts ``n`` steps,
    ``delay`` seconds each, and gives its task id."""
    other = f"{owner}-other"
    with (
        workers_server() as server,
        client(server, owner) as mine,
        client(server, other) as theirs,
        theirs.stream("GET", EVERYTHING) as others,
    ):
        their_events = events(others)
        next(their_events)  # the position to resume from: this stream is open
        followed = count(8, 0.25)
        status = poll(lambda: find(followed), bool, "the task's status")
        assert theirs.get(_task_events(status)).status_code == 404
        with mine.stream("GET", _task_events(status)) as r:
            got = [e.data for e in events(r) if e.data]  # to the end of the stream
        progress = [e["progress"] for e in got if e["state"] == "In Progress"]
        assert len(set(progress)) >= 2, got
        assert progress == sorted(progress)
        assert (got[-1]["state"], got[-1]["completed_steps"]) == ("Succeeded", 8)

        dropped = count(8, 0.25)
        status = poll(lambda: find(dropped), bool, "the task's status")
        with mine.stream("GET", _task_events(status)) as r:
            seen = until(events(r), _counting, "a step before the end")[-1]
        wait_state(dropped, State.SUCCEEDED)
        resume = {"Last-Event-ID": seen.id}
        with mine.stream("GET", _task_events(status), headers=resume) as r:
            missed = [e.data for e in events(r) if e.data]
        assert missed[-1]["state"] == "Succeeded", missed
        assert all(e["completed_steps"] > seen.data["completed_steps"] for e in missed)

        publish(taskstatus.get_tracker(), user_id=other, name="their own")
        received = until(their_events, lambda e: e.data["name"] == "their own", "their own")
    assert [e.data["user_id"] for e in received] == [other]
