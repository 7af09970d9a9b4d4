"""The REST API on statuses written by real Celery workers, on every broker x store."""

from __future__ import annotations

from pathlib import Path

import pytest

import taskstatus
from taskstatus import State
from tests.queue_celery import app as tasks
from tests.web.workers import check_every_route

from .conftest import Cell, find, poll, wait_failed, wait_state

pytestmark = pytest.mark.timeout(120)


def test_every_route_for_each_caller(cell: Cell, uid: int, tmp_path: Path) -> None:
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
        taskstatus.get_by_task_id(produced.id),
        taskstatus.get_by_task_id(failed.id),
        taskstatus.get_by_task_id(running.id),
        b"id,name\n1,x\n",
        lambda: wait_state(running.id, State.CANCELED),
    )
    assert find(produced.id) is None
