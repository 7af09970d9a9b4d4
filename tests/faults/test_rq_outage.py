"""RQ workers when the store goes away, and when a worker dies under a running work horse:
nothing delivered is lost or run twice, no outcome is lost."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue

import taskstatus
import taskstatus.queues.rq
from taskstatus import State
from tests.queue_rq import jobs
from tests.queue_rq.conftest import Cell
from tests.waiting import poll, wait_state

pytestmark = pytest.mark.timeout(120)

OWNER = 7
#: Small heartbeat settings, in the workers and in the test process (which reaps).
LOST_AFTER = 3.0
HEARTBEAT = {"TASKSTATUS_HEARTBEAT_INTERVAL": "0.5", "TASKSTATUS_LOST_AFTER": str(LOST_AFTER)}


@pytest.fixture
def cell(own_postgres, own_redis, tmp_path: Path) -> Iterator[Cell]:
    """A queue on the test's own Redis, a store on its own PostgreSQL server."""
    taskstatus.queues.rq.install()
    tracker = taskstatus.configure(
        url=own_postgres.url,
        artifact_storage=str(tmp_path / "artifacts"),
        heartbeat_interval=0.5,
        lost_after=LOST_AFTER,
    )
    queue = Queue("ts-outage", connection=Redis.from_url(own_redis.url))
    cell = Cell(queue, own_postgres.url, tmp_path, redis_url=own_redis.url)
    try:
        yield cell
    finally:
        cell.close()
        tracker.close()


def log_of(cell: Cell, index: int = 0) -> str:
    return (cell.tmp / f"worker-{index}.log").read_text(errors="replace")


def runs(folder: Path) -> int:
    return len(list(folder.iterdir()))


@pytest.mark.parametrize("worker", ["fork", "simple"])
def test_jobs_taken_while_the_store_is_down_run_once_it_is_back(
    cell: Cell, own_postgres, tmp_path: Path, worker: str
) -> None:
    folder, gate = tmp_path / "runs", tmp_path / "gate"
    folder.mkdir()
    busy = cell.queue.enqueue(jobs.wait_for, str(gate))  # untracked: needs no store
    cell.start(worker)
    poll(busy.get_status, lambda status: status == "started", "the worker to be busy")
    sent = [cell.queue.enqueue(jobs.counted, OWNER, str(folder)) for _ in range(4)]
    own_postgres.stop()
    time.sleep(1)  # past what the worker last read (it reads cancels at most 2 intervals old)
    gate.touch()  # the worker takes the tracked jobs while the store is down
    poll(lambda: log_of(cell), lambda text: "cannot record the start of job" in text, "a deferral")
    time.sleep(3)
    assert runs(folder) == 0  # nothing ran untracked, nothing failed
    assert all(job.get_status(refresh=True) == "queued" for job in sent)
    own_postgres.start()
    for job in sent:
        status = wait_state(job.id, State.SUCCEEDED)
        assert status.attempts == 1
    assert runs(folder) == len(sent)


def test_work_horse_of_a_killed_worker_vouches_for_its_job_and_stores_its_success(
    cell: Cell, tmp_path: Path
) -> None:
    folder = tmp_path / "runs"
    folder.mkdir()
    worker = cell.start("fork", env=HEARTBEAT)
    job = cell.queue.enqueue(jobs.counted, OWNER, str(folder), seconds=LOST_AFTER + 3)
    wait_state(job.id, State.IN_PROGRESS)  # its worker wrote the start
    (horse,) = poll(lambda: Cell.children(worker), bool, "the work horse")
    os.kill(worker.pid, signal.SIGKILL)  # the worker alone: the horse has its own group
    worker.wait(timeout=10)
    killed = time.monotonic()
    tracker = taskstatus.get_tracker()
    while time.monotonic() < killed + LOST_AFTER + 1.5:
        tracker.reap_lost()
        assert taskstatus.get_by_task_id(job.id).state is State.IN_PROGRESS
        time.sleep(0.25)
    os.kill(horse, 0)  # still running, longer than lost_after after its worker died
    done = wait_state(job.id, State.SUCCEEDED)
    assert (done.attempts, runs(folder)) == (1, 1)
