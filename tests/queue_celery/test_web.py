"""The REST API and its event streams on statuses written by real Celery workers."""

from __future__ import annotations

from pathlib import Path

import pytest

import taskstatus
from taskstatus import State
from tests.queue_celery import app as tasks
from tests.web.workers import check_every_route, check_live_events

from .conftest import STORE_CELLS, WEB_CELLS, Cell, cell_ids, find, poll, wait_failed, wait_state

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("cell", WEB_CELLS, ids=cell_ids(WEB_CELLS), indirect=True)
def test_every_route_for_each_caller(cell: Cell, uid: int, tmp_path: Path) -> None:
    since = taskstatus.get_tracker().change_position()
    produced = tasks.produce.delay(uid)
    failed = tasks.explode.delay(uid, "bad header")
    marker = tmp_path / "running"
    running = tasks.sleepy.delay(uid, seconds=60, marker=str(marker))
    wait_state(produced.id, State.SUCCEEDED)
    wait_failed(failed.id)
    poll(marker.exists, bool, "the sleepy task to run")
    wait_state(running.id, State.IN_PROGRESS)
    check_every_route(
        str(uid),
        since,
        taskstatus.get_by_task_id(produced.id),
        taskstatus.get_by_task_id(failed.id),
        taskstatus.get_by_task_id(running.id),
        b"id,name\n1,x\n",
        lambda: wait_state(running.id, State.CANCELED),
    )
    assert find(produced.id) is None


@pytest.mark.parametrize("cell", STORE_CELLS, ids=cell_ids(STORE_CELLS), indirect=True)
def test_live_events_of_a_task_a_worker_runs(cell: Cell, uid: int) -> None:
    check_live_events(str(uid), lambda n, delay: tasks.count.delay(uid, n, delay).id)
