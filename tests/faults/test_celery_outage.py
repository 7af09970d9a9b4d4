"""Celery workers and a store that goes away: nothing delivered meanwhile is lost or run twice,
and no message is acknowledged before its outcome is stored."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import taskstatus
from taskstatus import State
from tests.conftest import require_server
from tests.queue_celery import app as tasks
from tests.queue_celery.conftest import REDIS_URL, Cell, _watch
from tests.waiting import poll, wait_state

pytestmark = pytest.mark.timeout(120)

OWNER = 7


@pytest.fixture
def cell(request: pytest.FixtureRequest, own_postgres, tmp_path: Path) -> Iterator[Cell]:
    """A Redis-brokered cell whose store is the test's own PostgreSQL server."""
    require_server("Redis", REDIS_URL)
    cell = Cell("redis", own_postgres.url, tmp_path)
    _watch(request, cell)
    try:
        cell.activate()
        yield cell
    finally:
        cell.close()
        taskstatus.get_tracker().close()


def runs(folder: Path) -> int:
    return len(list(folder.iterdir()))


@pytest.mark.parametrize("task", [tasks.counted, tasks.counted_late], ids=["early", "acks_late"])
def test_tasks_delivered_while_the_store_is_down_run_once_it_is_back(
    cell: Cell, own_postgres, tmp_path: Path, task
) -> None:
    folder = tmp_path / "runs"
    folder.mkdir()
    queue = cell.new_queue()  # the worker consumes it only once the store is down
    worker = cell.start_worker(cell.queue, concurrency=2)
    sent = [task.apply_async((OWNER, str(folder)), queue=queue) for _ in range(4)]
    own_postgres.stop()
    tasks.app.control.add_consumer(queue, destination=[worker.hostname], reply=True)
    worker.wait_log("cannot record the start of task")
    time.sleep(3)
    assert runs(folder) == 0  # nothing ran untracked
    own_postgres.start()
    for result in sent:
        status = wait_state(result.id, State.SUCCEEDED)
        assert status.attempts == 1
    assert runs(folder) == len(sent)
    time.sleep(1)  # no late second run
    assert runs(folder) == len(sent)


def test_acks_late_message_is_not_acknowledged_before_its_outcome_is_stored(
    cell: Cell, own_postgres, tmp_path: Path
) -> None:
    folder, gate = tmp_path / "runs", tmp_path / "gate"
    folder.mkdir()
    worker = cell.start_worker(concurrency=1)
    sent = tasks.counted_late.delay(OWNER, str(folder), str(gate))
    wait_state(sent.id, State.IN_PROGRESS)
    own_postgres.stop()
    gate.touch()  # the task ends while its outcome cannot be stored
    worker.wait_log("could not")  # ... store the outcome: it is held, not acknowledged
    time.sleep(1)
    worker.kill()
    own_postgres.start()
    cell.start_worker(concurrency=1)  # the message comes back (visibility timeout)
    wait_state(sent.id, State.SUCCEEDED)
    poll(lambda: runs(folder), lambda n: n == 2, "the redelivered run")
