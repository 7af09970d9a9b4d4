"""The REST API and its event streams on statuses written by real ``rq worker`` processes."""

from __future__ import annotations

from pathlib import Path

import pytest

import taskstatus
from taskstatus import State
from tests.queue_rq import jobs
from tests.waiting import find, poll, wait_state
from tests.web.workers import check_every_route, check_live_events

from .conftest import WEB_STORES

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.parametrize("rq_cell", WEB_STORES, indirect=True),
]


def test_every_route_for_each_caller(rq_cell, uid, tmp_path: Path) -> None:
    since = taskstatus.get_tracker().change_position()
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
        since,
        taskstatus.get_by_task_id(produced.id),
        taskstatus.get_by_task_id(failed.id),
        taskstatus.get_by_task_id(running.id),
        b"a,b\n1,2\n",
        lambda: wait_state(running.id, State.CANCELED),
    )
    assert find(produced.id) is None


def test_live_events_of_a_task_a_worker_runs(rq_cell, uid) -> None:
    rq_cell.start()
    check_live_events(
        str(uid), lambda n, delay: rq_cell.queue.enqueue(jobs.count, uid, n, delay).id
    )
