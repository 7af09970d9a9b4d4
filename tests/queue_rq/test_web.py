"""The REST API on statuses written by real ``rq worker`` processes."""

from __future__ import annotations

from pathlib import Path

import pytest

import taskstatus
from taskstatus import State
from taskstatus.web import create_app
from taskstatus.web import events as web_events
from tests.helpers import publish
from tests.queue_rq import jobs
from tests.waiting import find, poll, wait_state
from tests.web.conftest import header_user
from tests.web.live import client, events, live_server
from tests.web.workers import check_every_route

pytestmark = pytest.mark.timeout(120)


def test_every_route_for_each_caller(rq_cell, uid, tmp_path: Path) -> None:
    produced = rq_cell.queue.enqueue(jobs.stages, uid)
    failed = rq_cell.queue.enqueue(jobs.explode, uid, "bad header")
    rq_cell.work()
    marker = tmp_path / "running"
    running = rq_cell.queue.enqueue(jobs.long_running, uid, str(marker), seconds=60)
    rq_cell.start()
    poll(marker.exists, bool, "the long job to run")
    wait_state(running.id, State.IN_PROGRESS)
    check_every_route(
        str(uid),
        taskstatus.get_by_task_id(produced.id),
        taskstatus.get_by_task_id(failed.id),
        taskstatus.get_by_task_id(running.id),
        b"a,b\n1,2\n",
        lambda: wait_state(running.id, State.CANCELED),
    )
    assert find(produced.id) is None


def test_live_events_of_a_task_a_worker_runs(rq_cell, uid, monkeypatch) -> None:
    """A client follows a job's progress to its end; another that drops and reconnects with
    Last-Event-ID gets what it missed; a third user receives nothing of either."""
    monkeypatch.setattr(web_events, "POLL_INTERVAL", 0.2)
    owner, other = str(uid), f"{uid}-other"
    rq_cell.start()
    with (
        live_server(create_app(header_user)) as server,
        client(server, owner) as mine,
        client(server, other) as theirs,
        theirs.stream("GET", "/api/v1/events") as others,
    ):
        their_events = events(others)
        next(their_events)
        followed = rq_cell.queue.enqueue(jobs.count, uid, 8, 0.25)
        status = poll(lambda: find(followed.id), bool, "the job's status")
        url = f"/api/v1/tasks/{status.uuid}/events"
        assert theirs.get(url).status_code == 404
        with mine.stream("GET", url) as r:
            got = [e.data for e in events(r) if e.data]  # to the end of the stream
        progress = [e["progress"] for e in got if e["state"] == "In Progress"]
        assert len(set(progress)) >= 2, got
        assert progress == sorted(progress)
        assert (got[-1]["state"], got[-1]["completed_steps"]) == ("Succeeded", 8)

        dropped = rq_cell.queue.enqueue(jobs.count, uid, 8, 0.25)
        status = poll(lambda: find(dropped.id), bool, "the job's status")
        url = f"/api/v1/tasks/{status.uuid}/events"
        with mine.stream("GET", url) as r:
            stream = events(r)
            seen = next(e for e in stream if e.data and e.data["completed_steps"] >= 1)
        wait_state(dropped.id, State.SUCCEEDED)
        with mine.stream("GET", url, headers={"Last-Event-ID": seen.id}) as r:
            missed = [e.data for e in events(r) if e.data]
        assert missed[-1]["state"] == "Succeeded", missed
        assert all(e["completed_steps"] > seen.data["completed_steps"] for e in missed)

        publish(taskstatus.get_tracker(), user_id=other, name="their own")
        received = []
        for e in their_events:
            if e.data:
                received.append(e.data)
                if e.data["name"] == "their own":
                    break
    assert [e["user_id"] for e in received] == [other]
