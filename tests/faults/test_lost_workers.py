"""A whole worker killed, and the store gone for a while: real workers on each queue.

Killed: a fresh worker that never gets a task still reaps what the dead one left In Progress,
within ``lost_after`` + 2 x ``heartbeat_interval`` of the kill (plus the new worker's start-up).
Store outage of 2 x ``lost_after`` mid-run: no live or finished task is taken for lost.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import taskstatus
from taskstatus import State, TaskStatus
from tests.conftest import require_server
from tests.waiting import poll

from .servers import PrivatePostgres

pytestmark = pytest.mark.timeout(120)

HEARTBEAT_INTERVAL = 0.5
LOST_AFTER = 3.0
#: Scheduling on a busy 2-core machine, the test's own polling.
SLACK = 1.0


@pytest.fixture
def uid() -> int:
    return uuid.uuid4().int % 10**12


@pytest.fixture(autouse=True)
def fast_heartbeats(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers started by the test (and the test process) use short heartbeat settings."""
    monkeypatch.setenv("TASKSTATUS_HEARTBEAT_INTERVAL", str(HEARTBEAT_INTERVAL))
    monkeypatch.setenv("TASKSTATUS_LOST_AFTER", str(LOST_AFTER))


def status(task_id: str) -> TaskStatus | None:
    return taskstatus.get_tracker().find_by_task_id(task_id)


def wait_running(task_id: str) -> None:
    poll(
        lambda: status(task_id),
        lambda s: s is not None and s.state is State.IN_PROGRESS,
        f"{task_id} to run",
    )


def ended_after_kill(task_id: str, killed_at: float, ready_at: float) -> TaskStatus:
    """Wait (no task sent) until the dead worker's task is no longer In Progress on its first
    attempt; check and print how long it took."""
    found = poll(
        lambda: status(task_id),
        lambda s: s is not None and (s.state is not State.IN_PROGRESS or s.attempts > 1),
        f"{task_id} to be reaped",
    )
    took, start_up = time.monotonic() - killed_at, ready_at - killed_at
    bound = LOST_AFTER + 2 * HEARTBEAT_INTERVAL + start_up + SLACK
    print(
        f"reaped {took:.2f} s after the kill "
        f"(worker start-up {start_up:.2f} s, bound {bound:.2f} s)"
    )
    assert took <= bound
    return found


def assert_worker_lost(found: TaskStatus) -> None:
    assert found.state is State.FAILED
    assert [a.text for a in found.artifacts if a.name == "Error"] == [
        "The worker running this task was lost."
    ]


# -- a whole worker killed, a fresh idle one started ---------------------------------------------
@pytest.mark.parametrize("pool", ["prefork", "solo"])
def test_celery_idle_worker_reaps_a_killed_worker(pool: str, tmp_path: Path, uid: int):
    from tests.queue_celery import app
    from tests.queue_celery.conftest import open_cell

    with open_cell("redis", "sqlite", tmp_path) as cell:
        first = cell.start_worker(pool=pool)
        task_id = app.sleepy.delay(uid, seconds=60).id
        wait_running(task_id)
        first.kill()
        killed_at = time.monotonic()
        cell.start_worker(pool=pool)
        assert_worker_lost(ended_after_kill(task_id, killed_at, time.monotonic()))


def test_dramatiq_idle_worker_reaps_a_killed_worker(
    tmp_path: Path, uid: int, monkeypatch: pytest.MonkeyPatch
):
    from tests.queue_dramatiq import actors
    from tests.queue_dramatiq.conftest import open_cell

    # Redis gives a dead worker's message back after the broker's heartbeat timeout (Dramatiq's
    # default: 60 s): the reaper, not the redelivery, must end the run.
    monkeypatch.setenv("TS_DQ_REDIS_HEARTBEAT_TIMEOUT", "60000")
    with open_cell("redis", "sqlite", tmp_path) as cell:
        cell.activate()
        first = cell.start_worker()
        message = actors.long_running.send(uid, str(tmp_path / "ran"), seconds=60)
        wait_running(message.message_id)
        cell.kill(first)
        killed_at = time.monotonic()
        cell.start_worker()
        found = ended_after_kill(message.message_id, killed_at, time.monotonic())
    # Dramatiq delivers an unacknowledged message again: the task waits for that.
    assert (found.state, found.attempts) == (State.RETRYING, 2)


@contextlib.contextmanager
def rq_cell(store_url: str, tmp: Path) -> Iterator[object]:
    from redis import Redis
    from rq import Queue

    import taskstatus.queues.rq
    from tests.queue_rq.conftest import REDIS_URL, Cell

    require_server("Redis", REDIS_URL)
    taskstatus.queues.rq.install()
    tracker = taskstatus.configure(url=store_url, artifact_storage=str(tmp / "artifacts"))
    queue = Queue(f"ts-{uuid.uuid4().hex[:12]}", connection=Redis.from_url(REDIS_URL))
    cell = Cell(queue, store_url, tmp)
    try:
        yield cell
    finally:
        cell.close()
        tracker.close()


def start_rq_worker(cell: object) -> object:
    proc = cell.start()  # type: ignore[attr-defined]
    log = cell.tmp / f"worker-{len(cell.procs) - 1}.log"  # type: ignore[attr-defined]
    poll(
        lambda: log.read_text(errors="replace"),
        lambda text: "Listening on" in text,
        "rq worker to start",
    )
    return proc


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def test_rq_idle_worker_reaps_a_killed_worker(tmp_path: Path, uid: int):
    from tests.queue_rq import jobs

    with rq_cell(f"sqlite:///{tmp_path / 'ts.db'}", tmp_path) as cell:
        first = start_rq_worker(cell)
        job = cell.queue.enqueue(jobs.long_running, uid, str(tmp_path / "ran"), seconds=60)  # type: ignore[attr-defined]
        wait_running(job.id)
        # The worker's group, then its work horse, which RQ puts in a group of its own (a
        # horse that outlives its worker vouches for its job: see test_rq_outage.py).
        horses = children(first.pid)
        os.killpg(first.pid, signal.SIGKILL)
        for horse in horses:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(horse, signal.SIGKILL)
        first.wait(timeout=10)
        killed_at = time.monotonic()
        start_rq_worker(cell)
        assert_worker_lost(ended_after_kill(job.id, killed_at, time.monotonic()))


# -- the store goes away for 2 x lost_after mid-run ----------------------------------------------
#: One task ends during the outage (its success queued), one after it.
DURATIONS = [4.0, 12.0]


@pytest.fixture
def slow_rounds(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The workers running the tasks stamp them every 1.5 s: long after the store is back."""
    monkeypatch.setenv("TASKSTATUS_HEARTBEAT_INTERVAL", "1.5")
    return monkeypatch


def ride_out_outage(
    store: PrivatePostgres,
    task_ids: list[str],
    workers: list,
    start_idle_worker: Callable[[], object],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the tasks running, start an idle worker whose reaper looks every 0.2 s, stop the
    store for 2 x lost_after, then check that every task ended Succeeded on its first
    attempt (none was taken for lost) and that the workers still run."""
    for task_id in task_ids:
        wait_running(task_id)
    monkeypatch.setenv("TASKSTATUS_HEARTBEAT_INTERVAL", "0.2")
    start_idle_worker()
    time.sleep(0.5)  # it has reaped once: it knows the store
    store.stop()
    time.sleep(2 * LOST_AFTER)
    store.start()
    ended = [
        poll(lambda t=t: status(t), lambda s: s is not None and s.is_terminal, f"{t} to end")
        for t in task_ids
    ]
    assert [(s.state, s.attempts) for s in ended] == [(State.SUCCEEDED, 1)] * len(task_ids)
    assert all(worker.poll() is None for worker in workers)


def test_dramatiq_store_outage_loses_nothing(
    own_postgres: PrivatePostgres, tmp_path: Path, uid: int, slow_rounds: pytest.MonkeyPatch
):
    from tests.queue_dramatiq import actors
    from tests.queue_dramatiq.conftest import Cell, use_store

    use_store(own_postgres.url, tmp_path)
    cell = Cell("redis", own_postgres.url, tmp_path)
    try:
        cell.activate()
        worker = cell.start_worker()
        sent = [
            actors.long_running.send(uid, str(tmp_path / f"ran-{i}"), seconds=seconds).message_id
            for i, seconds in enumerate(DURATIONS)
        ]
        ride_out_outage(own_postgres, sent, [worker], cell.start_worker, slow_rounds)
        after = actors.count.send(uid, 2).message_id  # no restart needed
        poll(lambda: status(after), lambda s: s and s.state is State.SUCCEEDED, "a later task")
    finally:
        cell.close()


def test_celery_store_outage_loses_nothing(
    own_postgres: PrivatePostgres, tmp_path: Path, uid: int, slow_rounds: pytest.MonkeyPatch
):
    from tests.queue_celery import app
    from tests.queue_celery.conftest import Cell

    cell = Cell("redis", own_postgres.url, tmp_path)
    try:
        cell.activate()  # creates the schema
        worker = cell.start_worker(pool="prefork", concurrency=len(DURATIONS))
        sent = [app.sleepy.delay(uid, seconds=seconds).id for seconds in DURATIONS]
        idle_queue = cell.new_queue()
        ride_out_outage(
            own_postgres,
            sent,
            [worker.proc],
            lambda: cell.start_worker(idle_queue, pool="solo"),
            slow_rounds,
        )
        after = app.count.delay(uid, 2).id
        poll(lambda: status(after), lambda s: s and s.state is State.SUCCEEDED, "a later task")
    finally:
        cell.close()


def test_rq_store_outage_loses_nothing(
    own_postgres: PrivatePostgres, tmp_path: Path, uid: int, slow_rounds: pytest.MonkeyPatch
):
    from tests.queue_rq import jobs

    with rq_cell(own_postgres.url, tmp_path) as cell:
        # One job per worker at a time: one ends during the outage, one after it.
        workers = [start_rq_worker(cell), start_rq_worker(cell)]
        sent = [
            cell.queue.enqueue(jobs.long_running, uid, str(tmp_path / f"ran-{i}"), seconds=s).id  # type: ignore[attr-defined]
            for i, s in enumerate(DURATIONS)
        ]
        # The idle worker is started once the two jobs run: it gets none of them.
        ride_out_outage(own_postgres, sent, workers, lambda: start_rq_worker(cell), slow_rounds)
        after = cell.queue.enqueue(jobs.count, uid, 2).id  # type: ignore[attr-defined]
        poll(lambda: status(after), lambda s: s and s.state is State.SUCCEEDED, "a later job")
