"""Worker pools, dead workers, time limits and purge: tests that start or kill workers."""

from __future__ import annotations

import os
import signal
from datetime import timedelta
from pathlib import Path

import pytest
from celery import group
from celery.exceptions import TimeLimitExceeded, WorkerLostError

import taskstatus
from taskstatus import NotFound, State
from tests.queue_celery import app as tasks
from tests.waiting import wait_stage_shown

from .conftest import TIMEOUT, Cell, error_texts, find, poll, wait_failed, wait_state

pytestmark = pytest.mark.timeout(120)


def wait_running(task_id: str) -> None:
    """Wait until the task has written some progress, i.e. is well inside its body."""
    poll(
        lambda: find(task_id),
        lambda s: s is not None and s.state is State.IN_PROGRESS and s.completed_steps > 0,
        f"task {task_id} to make progress",
    )


@pytest.mark.parametrize("pool", ["prefork", "solo", "threads"])
def test_pool(make_cell, pool: str, uid: int, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Success, failure, a task canceled before any worker existed and a running cancel."""
    cell: Cell = make_cell("redis", "sqlite")
    marker = tmp_path / "ran"
    skipped = tasks.sleepy.apply_async((uid,), {"seconds": 0.1, "marker": str(marker)})
    taskstatus.get_by_task_id(skipped.id).cancel()  # its revoke reaches no worker
    counted = tasks.count.delay(uid, 3)
    failed = tasks.explode.delay(uid)

    worker = cell.start_worker(pool=pool)
    assert counted.get(timeout=TIMEOUT) == 3
    with pytest.raises(ValueError, match="no header"):
        failed.get(timeout=TIMEOUT)
    worker.wait_log(f"[{skipped.id}] ignored")
    assert not marker.exists()
    never = taskstatus.get_by_task_id(skipped.id)
    assert (never.state, never.started_at, never.artifacts) == (State.CANCELED, None, [])
    done = wait_state(counted.id, State.SUCCEEDED)
    assert (done.completed_steps, done.total_steps, done.attempts) == (3, 3, 1)
    broken = wait_state(failed.id, State.FAILED)
    assert error_texts(broken) == ["ValueError: the file has no header"]

    running = tasks.sleepy.delay(uid, seconds=30)
    wait_state(running.id, State.IN_PROGRESS).cancel()
    cell.wait_stopped(running.id)
    stopped = taskstatus.get_by_task_id(running.id)
    assert (stopped.state, stopped.artifacts) == (State.CANCELED, [])


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_killed_worker_message_is_redelivered(
    make_cell, broker: str, uid: int, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL of the whole worker mid-task (acks_late): the next worker runs it again."""
    cell: Cell = make_cell(broker, "postgresql")
    marker = tmp_path / "pids"
    first = cell.start_worker(concurrency=1)
    result = tasks.fragile.apply_async((uid, str(marker)), {"seconds": 3.0})
    wait_running(result.id)
    first.kill()
    stuck = taskstatus.get_by_task_id(result.id)
    assert (stuck.state, stuck.attempts) == (State.IN_PROGRESS, 1)

    cell.start_worker(concurrency=1)
    assert result.get(timeout=60) == "survived"
    final = wait_state(result.id, State.SUCCEEDED)
    assert final.attempts == 2
    assert (final.completed_steps, final.total_steps) == (10, 10)
    assert final.artifacts == []
    pids = marker.read_text().split()
    assert len(pids) == 2
    assert pids[0] != pids[1]


def test_killed_pool_process_of_acks_late_task_is_requeued(
    one_cell: Cell, uid: int, tmp_path: Path
) -> None:
    marker = tmp_path / "pids"
    result = tasks.fragile.delay(uid, str(marker), seconds=2.0)
    wait_running(result.id)
    os.kill(int(marker.read_text()), signal.SIGKILL)
    assert result.get(timeout=TIMEOUT) == "survived"
    final = wait_state(result.id, State.SUCCEEDED)
    assert final.attempts == 2
    assert (final.completed_steps, final.total_steps) == (10, 10)
    assert final.artifacts == []
    assert len(marker.read_text().split()) == 2


def test_killed_pool_process_fails_the_task(make_cell, uid: int) -> None:  # type: ignore[no-untyped-def]
    cell: Cell = make_cell("redis", "sqlite")
    worker = cell.start_worker(concurrency=1)
    result = tasks.sleepy.delay(uid, seconds=30)
    wait_state(result.id, State.IN_PROGRESS)
    (child,) = worker.children()
    os.kill(child, signal.SIGKILL)
    with pytest.raises(WorkerLostError):
        result.get(timeout=TIMEOUT)
    final = wait_failed(result.id)
    assert error_texts(final) == ["The worker running this task was lost."]
    assert final.attempts == 1


def test_task_of_a_killed_worker_is_found_lost_by_the_next_worker(make_cell, uid: int) -> None:  # type: ignore[no-untyped-def]
    """No process is left to report the death: heartbeats of another worker find it."""
    cell: Cell = make_cell("redis", "sqlite")
    beats = {"TASKSTATUS_HEARTBEAT_INTERVAL": "0.5", "TASKSTATUS_LOST_AFTER": "3"}
    first = cell.start_worker(concurrency=1, env=beats)
    result = tasks.sleepy.delay(uid, seconds=60)
    wait_state(result.id, State.IN_PROGRESS)
    first.kill()

    cell.start_worker(concurrency=1, env=beats)
    assert tasks.count.delay(uid, 1).get(timeout=TIMEOUT) == 1  # it now sends heartbeats
    final = wait_failed(result.id, timeout=15)
    assert error_texts(final) == ["The worker running this task was lost."]
    assert final.attempts == 1


def test_hard_time_limit_fails_the_task(one_cell: Cell, uid: int) -> None:
    result = tasks.stubborn.apply_async((uid,), {"seconds": 30}, time_limit=1)
    with pytest.raises(TimeLimitExceeded):
        result.get(timeout=TIMEOUT)
    final = wait_failed(result.id)
    assert error_texts(final) == ["The task took too long and was stopped."]


def test_purge_keeps_unfinished_work(make_cell, uid: int, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cell: Cell = make_cell("redis", "postgresql")
    cell.start_worker()
    gate = tmp_path / "gate"
    produced = tasks.produce.delay(uid)
    produced.get(timeout=TIMEOUT)
    finished = wait_state(produced.id, State.SUCCEEDED)
    (stored,) = [a for a in finished.artifacts if a.file]
    assert len(list(cell.artifacts.rglob("export.csv"))) == 1

    # A failed group whose other member still runs, and a task nobody has started.
    members = group(tasks.explode.si(uid), tasks.gated.si(uid, str(gate))).apply_async()
    wait_state(members.results[1].id, State.IN_PROGRESS)
    failed = wait_state(members.results[0].id, State.FAILED)
    waiting = tasks.count.apply_async((uid, 1), queue=cell.new_queue())
    container = taskstatus.get(failed.parent_uuid)  # type: ignore[arg-type]
    wait_state(container.task_id, State.FAILED)

    assert taskstatus.purge(older_than=timedelta(0)) == 1
    with pytest.raises(NotFound):
        taskstatus.get(finished.uuid)
    with pytest.raises(NotFound):
        taskstatus.get_tracker().get_artifact(stored.uuid)
    assert list(cell.artifacts.rglob("export.csv")) == []
    left = {s.task_id for s in taskstatus.statuses(user_id=uid, limit=None)}
    assert left == {container.task_id, *(r.id for r in members.results), waiting.id}

    gate.touch()
    assert members.results[1].get(timeout=TIMEOUT) == "opened"
    wait_state(members.results[1].id, State.SUCCEEDED)
    assert taskstatus.purge(older_than=timedelta(0)) == 3
    assert [s.task_id for s in taskstatus.statuses(user_id=uid)] == [waiting.id]


def test_stage_shows_while_the_task_is_quiet(one_cell: Cell, uid: int, tmp_path: Path) -> None:
    """A stage set before a long stretch without progress calls is written within the
    progress interval, not when the task next reports (here: when it ends)."""
    marker = tmp_path / "running"
    result = tasks.quiet_stage.delay(uid, str(marker), "Rendering")
    shown = wait_stage_shown(result.id, "Rendering", marker, within=0.1 + 1.0)
    assert shown.state is State.IN_PROGRESS
    wait_state(result.id, State.SUCCEEDED)
