"""Live events on a real server, every store: who receives what, resuming, the end of a
stream, heartbeats, coalescing, and a client that goes away."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

import taskstatus
from taskstatus import Tracker
from taskstatus.web import create_app
from taskstatus.web import events as web_events
from tests.helpers import event, publish
from tests.waiting import poll
from tests.web.conftest import OTHER, OWNER, ROLES, ROOT, USER_OF_ROLE, header_user
from tests.web.live import LiveServer, as_event, client, events, live_server, until

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def server(tracker: Tracker, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveServer]:
    monkeypatch.setattr(web_events, "POLL_INTERVAL", 0.1)
    with live_server(create_app(header_user, tracker=tracker)) as live:
        yield live


def _finish(tracker: Tracker, task_id: str) -> None:
    tracker.lifecycle.start(event(task_id))
    tracker.lifecycle.end(event(task_id))


@pytest.mark.parametrize("role", ROLES)
def test_who_may_follow_a_task(tracker, server, role):
    mine = publish(tracker, "mine", user_id=OWNER)
    user = USER_OF_ROLE[role]
    with client(server, user) as http, http.stream("GET", f"/api/v1/tasks/{mine.uuid}/events") as r:
        if role == "anonymous":
            assert (r.status_code, r.read() and r.json()) == (
                401,
                {"detail": "authentication required"},
            )
            return
        if role == "other":
            r.read()
            assert r.status_code == 404
            assert r.json() == {"detail": f"no task status with uuid {mine.uuid}"}
            return
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-cache"
        assert r.headers["x-accel-buffering"] == "no"
        stream = events(r)
        first = next(stream)
        # The first event is the status as it is, the same JSON as GET tasks/{uuid}.
        assert first.data == as_event(http.get(f"/api/v1/tasks/{mine.uuid}").json())
        _finish(tracker, "mine")
        got = until(stream, lambda e: e.data["state"] == "Succeeded", "the end")
        assert all(e.data["task_id"] == "mine" for e in got)
        assert list(stream) == []  # the stream ends after the terminal event


@pytest.mark.parametrize("role", ROLES)
def test_every_change_the_caller_may_see(tracker, server, role):
    """``events``: nobody gets another's changes; a superuser gets everyone's."""
    user = USER_OF_ROLE[role]
    with client(server, user) as http, http.stream("GET", "/api/v1/events") as r:
        if role == "anonymous":
            assert r.status_code == 401
            return
        assert r.status_code == 200
        stream = events(r)
        start = next(stream)
        assert start.id and start.data is None  # a position to resume from, before any change
        publish(tracker, "owner's", user_id=OWNER)
        publish(tracker, "other's", user_id=OTHER)
        publish(tracker, "root's", user_id=ROOT)
        own = {"owner": "owner's", "other": "other's", "superuser": "root's"}[role]
        got = until(stream, lambda e: e.data["task_id"] == own, "the caller's own change")
    names = [e.data["task_id"] for e in got]
    if role == "superuser":
        assert names == ["owner's", "other's", "root's"]
    else:
        assert names == [own]


def test_events_take_the_list_filters(tracker, server):
    group = publish(tracker, "group", container="taskstatus.group", sealed=False)
    with client(server, OWNER) as http:
        bad = http.get("/api/v1/events", params={"state": "Sleeping"})
        assert bad.status_code == 400 and "Sleeping" in bad.json()["detail"]
        assert http.get("/api/v1/events", params={"stat": "x"}).status_code == 400
        assert http.get("/api/v1/events", params={"user_id": OTHER}).status_code == 403
        query = {"state": "Succeeded", "parent": str(group.uuid), "search": "KEEP"}
        with http.stream("GET", "/api/v1/events", params=query) as r:
            stream = events(r)
            next(stream)
            publish(tracker, "outside")  # not a child of the group
            _finish(tracker, "outside")
            publish(tracker, "skip", parent="group", name="skip me")
            _finish(tracker, "skip")
            publish(tracker, "keep", parent="group", name="keep me")  # Pending: not yet
            _finish(tracker, "keep")
            got = until(stream, lambda e: e.data["task_id"] == "keep", "the matching one")
    assert [(e.data["task_id"], e.data["state"]) for e in got] == [("keep", "Succeeded")]


def test_a_container_stream_has_its_children_and_its_sums(tracker, server):
    group = publish(tracker, "group", container="taskstatus.group", sealed=False)
    publish(tracker, "a", parent="group", total_steps=2)
    tracker.lifecycle.start(event("a"))  # the group starts with it
    url = f"/api/v1/tasks/{group.uuid}/events"
    with client(server, OWNER) as http, http.stream("GET", url) as r:
        stream = events(r)
        first = next(stream).data
        assert (first["state"], first["completed_steps"], first["total_steps"]) == (
            "In Progress",
            0,
            2,
        )
        # The child's steps change its own row only; the group's sums go out with it.
        tracker.increment_steps(tracker.get_by_task_id("a"), 1, 0)
        child, aggregate = until(stream, lambda e: e.data["task_id"] == "group", "the sums")
        assert (child.data["task_id"], child.data["completed_steps"]) == ("a", 1)
        assert (aggregate.data["completed_steps"], aggregate.data["total_steps"]) == (1, 2)
        assert aggregate.data["progress"] == 0.5
        assert aggregate.id == child.id  # the same change
        tracker.cancel(tracker.get(group.uuid))
        got = until(stream, lambda e: e.data["task_id"] == "group", "the group's end")
        assert got[-1].data["state"] == "Canceled"
        assert list(stream) == []


def test_a_client_that_reconnects_gets_what_it_missed(tracker, server):
    task = publish(tracker, "task", total_steps=3)
    url = f"/api/v1/tasks/{task.uuid}/events"
    with client(server, OWNER) as http:
        with http.stream("GET", url) as r:
            seen = next(events(r)).id
        tracker.lifecycle.start(event("task"))
        tracker.increment_steps(tracker.get(task.uuid), 2, 0)
        _finish(tracker, "task")
        headers = {"Last-Event-ID": seen}
        with http.stream("GET", url, headers=headers) as r:
            assert r.status_code == 200
            got = [e for e in events(r) if e.data is not None]  # ends by itself
        # Coalesced to the newest state of the one status: the terminal one, never missed.
        assert [(e.data["state"], e.data["completed_steps"]) for e in got] == [("Succeeded", 3)]
        # Resuming after the end: nothing more, and EventSource stops reconnecting on 204.
        done = http.get(url, headers={"Last-Event-ID": got[-1].id})
        assert done.status_code == 204
        # Opening it afresh gives the final state, then the end.
        with http.stream("GET", url) as r:
            assert [e.data["state"] for e in events(r) if e.data] == ["Succeeded"]


def test_a_client_that_reconnects_to_a_running_task_follows_on(tracker, server):
    task = publish(tracker, "task", total_steps=3)
    url = f"/api/v1/tasks/{task.uuid}/events"
    with client(server, OWNER) as http:
        with http.stream("GET", url) as r:
            seen = next(events(r)).id
        tracker.lifecycle.start(event("task"))
        tracker.increment_steps(tracker.get(task.uuid), 2, 0)
        with http.stream("GET", url, headers={"Last-Event-ID": seen}) as r:
            stream = events(r)
            got = until(stream, lambda e: e.data["completed_steps"] == 2, "the missed step")
            assert {e.data["state"] for e in got} == {"In Progress"}
            _finish(tracker, "task")
            got = until(stream, lambda e: e.data["state"] == "Succeeded", "the end")
            assert list(stream) == []


def test_resuming_the_stream_of_everything(tracker, server):
    with client(server, OWNER) as http:
        with http.stream("GET", "/api/v1/events") as r:
            start = next(events(r)).id
        publish(tracker, "while away")
        publish(tracker, "theirs", user_id=OTHER)
        with http.stream("GET", "/api/v1/events", headers={"Last-Event-ID": start}) as r:
            got = until(events(r), lambda e: True, "the missed change")
    assert [e.data["task_id"] for e in got] == ["while away"]


@pytest.mark.parametrize("bad", ["nope!", "AQ", "A" * 5000])
def test_a_bad_last_event_id_is_400(tracker, server, bad):
    task = publish(tracker, "task")
    with client(server, OWNER) as http:
        for url in (f"/api/v1/tasks/{task.uuid}/events", "/api/v1/events"):
            answer = http.get(url, headers={"Last-Event-ID": bad})
            assert answer.status_code == 400, url
            assert answer.json()["detail"].startswith("Last-Event-ID: not a change position")


def test_a_plugin_narrowing_view_holds_back_each_event(tracker, server):
    class NoSecrets:
        @taskstatus.hookimpl
        def taskstatus_permission(self, principal, action, status):
            return False if "secret" in status.name and not principal.is_superuser else None

    tracker.register(NoSecrets())
    group = publish(tracker, "group", container="taskstatus.group", sealed=False)
    with (
        client(server, OWNER) as http,
        http.stream("GET", "/api/v1/events") as everything,
        http.stream("GET", f"/api/v1/tasks/{group.uuid}/events") as one,
    ):
        all_events, group_events = events(everything), events(one)
        next(all_events), next(group_events)
        publish(tracker, "secret", parent="group", name="a secret")
        publish(tracker, "plain", parent="group")
        got = until(all_events, lambda e: e.data["task_id"] == "plain", "the plain one")
        assert [e.data["task_id"] for e in got] == ["plain"]
        got = until(group_events, lambda e: e.data["task_id"] == "plain", "the plain one")
        assert "secret" not in {e.data["task_id"] for e in got}


def test_heartbeats_on_a_quiet_stream(tracker, server, monkeypatch):
    monkeypatch.setattr(web_events, "HEARTBEAT", 0.2)
    task = publish(tracker, "task")
    with client(server, OWNER) as http:
        for url in (f"/api/v1/tasks/{task.uuid}/events", "/api/v1/events"):
            with http.stream("GET", url) as r:
                stream = events(r)
                next(stream)
                assert [next(stream).comment for _ in range(2)] == ["heartbeat"] * 2
        # A change after heartbeats still arrives: the pending read survived them.
        with http.stream("GET", f"/api/v1/tasks/{task.uuid}/events") as r:
            stream = events(r)
            next(stream)
            assert next(stream).comment == "heartbeat"
            _finish(tracker, "task")
            until(stream, lambda e: e.data["state"] == "Succeeded", "the end")
            assert list(stream) == []


def test_a_fast_ticking_task_is_coalesced(tracker, server):
    task = publish(tracker, "task", total_steps=10**6)
    tracker.lifecycle.start(event("task"))
    with (
        client(server, OWNER) as http,
        http.stream("GET", f"/api/v1/tasks/{task.uuid}/events") as r,
    ):
        stream = events(r)
        next(stream)
        began, ticks = time.monotonic(), 0
        # Enough ticks to need coalescing, however slow the database is today.
        while time.monotonic() - began < 1.5 or ticks < 30:
            tracker.increment_steps(tracker.get(task.uuid), 1, 0)
            ticks += 1
        # The run started above ends (_finish would start it again, from 0 steps).
        tracker.lifecycle.end(event("task"))
        got = until(stream, lambda e: e.data["state"] == "Succeeded", "the end")
        elapsed = time.monotonic() - began
    # One event per MIN_INTERVAL (0.25 s), plus the last state.
    assert len(got) <= elapsed / web_events.MIN_INTERVAL + 2, len(got)
    progress = [e.data["completed_steps"] for e in got if e.data["state"] == "In Progress"]
    assert progress == sorted(progress) and progress[-1] <= ticks
    assert got[-1].data["progress"] == 1.0


def _asgi_spec(app, version):
    """``app`` as a server of ASGI ``version`` runs it: from 2.4 on, Starlette's own
    streaming notices a client gone only when it next writes."""

    async def served(scope, receive, send):
        scope = {**scope, "asgi": {**scope.get("asgi", {}), "spec_version": version}}
        await app(scope, receive, send)

    return served


@pytest.mark.parametrize("spec", ["2.3", "2.4"])
def test_a_client_that_goes_away_leaves_nothing_running(tracker, monkeypatch, spec):
    """The stream's feed reads and tasks stop at once, not at the next heartbeat (15 s)."""
    monkeypatch.setattr(web_events, "POLL_INTERVAL", 0.1)
    monkeypatch.setattr(web_events, "WOKEN_POLL_INTERVAL", 0.1)  # reads to watch stop
    server = live_server(_asgi_spec(create_app(header_user, tracker=tracker), spec))
    reads = []
    store_changes = tracker.store.changes

    def counted(*args, **kwargs):
        reads.append(time.monotonic())
        return store_changes(*args, **kwargs)

    monkeypatch.setattr(tracker.store, "changes", counted)
    task = publish(tracker, "task")
    with server as server:
        _leave(server, task, reads)


def _leave(server, task, reads):
    idle = server.tasks()
    with client(server, OWNER) as http:
        for url in (f"/api/v1/tasks/{task.uuid}/events", "/api/v1/events"):
            with http.stream("GET", url) as r:
                stream = events(r)  # kept: a generator collected would close the connection
                next(stream)
                mark = len(reads)
                poll(lambda m=mark: len(reads) - m, lambda n: n >= 3, "the stream to read")
                assert server.tasks() > idle
    poll(server.tasks, lambda n: n == idle, "the streams' tasks to end", timeout=5)
    gone = len(reads)
    time.sleep(10 * web_events.POLL_INTERVAL)
    assert len(reads) == gone  # nobody follows the store any more


def test_openapi_describes_the_streams(tracker):
    spec = create_app(header_user, tracker=tracker).openapi()["paths"]
    for path in ("/api/v1/tasks/{uuid}/events", "/api/v1/events"):
        ok = spec[path]["get"]["responses"]["200"]["content"]
        assert list(ok) == ["text/event-stream"], path
        params = {p["name"] for p in spec[path]["get"]["parameters"]}
        assert "Last-Event-ID" in params
    assert {"state", "search", "parent", "user_id"} <= {
        p["name"] for p in spec["/api/v1/events"]["get"]["parameters"]
    }
