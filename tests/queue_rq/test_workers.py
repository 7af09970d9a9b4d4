"""The RQ adapter with real ``rq worker`` processes (forking ``Worker`` and ``SimpleWorker``)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from rq import Retry
from rq.job import JobStatus

import taskstatus
from taskstatus import State
from tests.queue_rq import jobs
from tests.waiting import error_texts, find, poll, wait_stage_shown, wait_state

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("worker", ["fork", "simple"])
def test_progress_and_success(rq_cell, uid, worker):
    job = rq_cell.queue.enqueue(jobs.count, uid, 3)
    rq_cell.work(worker)
    status = taskstatus.get_by_task_id(job.id)
    assert (status.state, status.name, status.user_id) == (State.SUCCEEDED, "Count to 3", str(uid))
    assert (status.completed_steps, status.total_steps, status.attempts) == (3, 3, 1)
    assert (status.queue, status.task_class) == ("rq", "tests.queue_rq.jobs.count")


@pytest.mark.parametrize("worker", ["fork", "simple"])
def test_failure(rq_cell, uid, worker):
    job = rq_cell.queue.enqueue(jobs.explode, uid, "bad header")
    rq_cell.work(worker)
    status = taskstatus.get_by_task_id(job.id)
    assert status.state is State.FAILED
    assert error_texts(status) == ["ValueError: bad header"]
    assert "ValueError: bad header" in (status.traceback or "")


@pytest.mark.parametrize("worker", ["fork", "simple"])
def test_silent_long_job_shows_in_progress(rq_cell, uid, worker, tmp_path: Path):
    """A job that reports nothing still shows In Progress while it runs (with the forking
    worker, the worker writes its start for the work horse)."""
    gate = tmp_path / "gate"
    job = rq_cell.queue.enqueue(jobs.gated, uid, str(gate))
    rq_cell.start(worker)
    running = wait_state(job.id, State.IN_PROGRESS)
    assert running.started_at is not None
    gate.touch()
    done = wait_state(job.id, State.SUCCEEDED)
    assert (done.attempts, done.completed_steps, done.total_steps) == (1, 1, 1)
    assert done.started_at == running.started_at


def test_retry_counts_an_attempt(rq_cell, uid, tmp_path: Path):
    job = rq_cell.queue.enqueue(jobs.flaky, uid, str(tmp_path / "m"), retry=Retry(max=1))
    rq_cell.work()
    status = taskstatus.get_by_task_id(job.id)
    assert (status.state, status.attempts) == (State.SUCCEEDED, 2)


@pytest.mark.parametrize("worker", ["fork", "simple"])
def test_a_retry_is_in_the_history(rq_cell, uid, worker, tmp_path: Path):
    job = rq_cell.queue.enqueue(jobs.flaky, uid, str(tmp_path / "m"), retry=Retry(max=1))
    rq_cell.work(worker)
    status = taskstatus.get_by_task_id(job.id)
    (retry,) = taskstatus.get_tracker().attempts(status)
    assert (retry.number, retry.message) == (1, "RuntimeError: first run fails")
    assert retry.started_at == status.started_at
    assert status.started_at <= retry.retried_at <= status.attempt_started_at
    assert status.attempt_started_at <= status.finished_at


def test_retries_exhausted_fail(rq_cell, uid):
    job = rq_cell.queue.enqueue(jobs.explode, uid, "again", retry=Retry(max=1))
    rq_cell.work()
    status = taskstatus.get_by_task_id(job.id)
    assert (status.state, status.attempts) == (State.FAILED, 2)
    assert error_texts(status) == ["ValueError: again"]


def test_stage_and_artifacts(rq_cell, uid):
    job = rq_cell.queue.enqueue(jobs.stages, uid)
    rq_cell.work()
    status = taskstatus.get_by_task_id(job.id)
    assert status.state is State.SUCCEEDED
    by_name = {a.name: a for a in status.artifacts}
    assert by_name["Report"].open().read() == b"a,b\n1,2\n"
    assert (by_name["Link"].url, by_name["Summary"].text) == ("https://example.com/r/1", "2 rows")


def test_missing_owner_enqueues_nothing(rq_cell):
    with pytest.raises(TypeError, match="user_id"):
        rq_cell.queue.enqueue(jobs.add, 1, 2)
    assert rq_cell.queue.count == 0
    assert taskstatus.statuses(limit=None) == []


def test_every_way_to_enqueue_records_the_status(rq_cell, uid):
    from datetime import timedelta

    queue = rq_cell.queue
    ids = [
        queue.enqueue_call(jobs.add, args=(1, 2), kwargs={"user_id": uid}).id,
        queue.enqueue_in(timedelta(hours=1), jobs.add, 3, 4, user_id=uid).id,
        *(
            j.id
            for j in queue.enqueue_many([queue.prepare_data(jobs.add, (5, 6), {"user_id": uid})])
        ),
    ]
    assert all(find(task_id).state is State.PENDING for task_id in ids)


def test_untracked_job_is_untouched(rq_cell):
    job = rq_cell.queue.enqueue(jobs.untracked, 4)
    rq_cell.work()
    assert find(job.id) is None


def test_cancel_queued_never_runs(rq_cell, uid, tmp_path: Path):
    marker = tmp_path / "ran"
    job = rq_cell.queue.enqueue(jobs.long_running, uid, str(marker), seconds=0.1)
    taskstatus.get_by_task_id(job.id).cancel()
    assert job.get_status(refresh=True) == JobStatus.CANCELED
    rq_cell.work()
    assert not marker.exists()
    assert taskstatus.get_by_task_id(job.id).state is State.CANCELED


def test_cancel_running(rq_cell, uid, tmp_path: Path):
    marker = tmp_path / "running"
    job = rq_cell.queue.enqueue(jobs.long_running, uid, str(marker), seconds=20)
    rq_cell.start()
    poll(marker.exists, bool, "the job to start")
    wait_state(job.id, State.IN_PROGRESS).cancel()
    poll(lambda: job.get_status(refresh=True), lambda s: s == JobStatus.FINISHED, "the job to end")
    status = taskstatus.get_by_task_id(job.id)
    assert status.state is State.CANCELED
    assert error_texts(status) == []


@pytest.mark.parametrize("worker", ["fork", "simple"])
def test_dependency_chain_with_a_failure(rq_cell, uid, worker):
    """The dependent of a failed job ends Canceled here and in RQ, though the job module
    (tests/queue_rq/jobs.py) never calls ``install()``: the worker sets up what it needs."""
    first = rq_cell.queue.enqueue(jobs.add, 1, 2, user_id=uid)
    failing = rq_cell.queue.enqueue(jobs.explode, uid, "no", depends_on=first)
    after = rq_cell.queue.enqueue(jobs.add, 3, 4, user_id=uid, depends_on=failing)
    rq_cell.work(worker)
    states = [taskstatus.get_by_task_id(j.id).state for j in (first, failing, after)]
    assert states == [State.SUCCEEDED, State.FAILED, State.CANCELED]
    assert after.get_status(refresh=True) == JobStatus.CANCELED
    assert rq_cell.queue.deferred_job_registry.get_job_ids() == []
    assert rq_cell.queue.canceled_job_registry.get_job_ids() == [after.id]


def test_taskstatus_group(rq_cell, uid):
    with taskstatus.group("Nightly", user_id=uid) as container:
        rq_cell.queue.enqueue(jobs.count, uid, 2)
        rq_cell.queue.enqueue(jobs.add, 1, 2, user_id=uid)
    rq_cell.work()
    root = taskstatus.get(container.uuid)
    assert root.state is State.SUCCEEDED
    assert len(root.children()) == 2


def test_job_timeout(rq_cell, uid):
    job = rq_cell.queue.enqueue(jobs.too_slow, uid, job_timeout=1)
    rq_cell.work()
    status = taskstatus.get_by_task_id(job.id)
    assert status.state is State.FAILED
    assert error_texts(status) == ["The task took too long and was stopped."]


def test_killed_work_horse_ends_failed(rq_cell, uid, tmp_path: Path):
    import os
    import signal

    marker = tmp_path / "running"
    job = rq_cell.queue.enqueue(jobs.long_running, uid, str(marker), seconds=20)
    after = rq_cell.queue.enqueue(jobs.add, 3, 4, user_id=uid, depends_on=job)
    worker = rq_cell.start()
    poll(marker.exists, bool, "the job to start")
    wait_state(job.id, State.IN_PROGRESS)
    horses = poll(lambda: rq_cell.children(worker), bool, "the work horse")
    os.kill(horses[0], signal.SIGKILL)
    status = poll(lambda: find(job.id), lambda s: s.is_terminal, "the status to end")
    assert status.state is State.FAILED
    assert error_texts(status) == ["The worker running this task was lost."]
    # The worker's main process ends the status, and cancels the dependent's RQ job too.
    assert wait_state(after.id, State.CANCELED)
    poll(
        lambda: after.get_status(refresh=True),
        lambda s: s == JobStatus.CANCELED,
        "RQ to cancel the dependent",
    )


def test_cancel_with_terminate_stops_the_horse(rq_cell, uid, tmp_path: Path):
    marker = tmp_path / "running"
    job = rq_cell.queue.enqueue(jobs.long_running, uid, str(marker), seconds=20)
    rq_cell.start()
    poll(marker.exists, bool, "the job to start")
    taskstatus.cancel(wait_state(job.id, State.IN_PROGRESS).uuid, terminate=True)
    poll(lambda: job.get_status(refresh=True), lambda s: s == JobStatus.STOPPED, "RQ to stop it")
    status = taskstatus.get_by_task_id(job.id)
    assert status.state is State.CANCELED
    assert error_texts(status) == []


@pytest.mark.parametrize("worker", ["fork", "simple"])
def test_stage_shows_while_the_job_is_quiet(rq_cell, uid, worker, tmp_path: Path):
    """A stage set before a long stretch without progress calls is written within the
    progress interval, not when the job next reports (here: when it ends)."""
    marker = tmp_path / "running"
    job = rq_cell.queue.enqueue(jobs.quiet_stage, uid, str(marker), "Rendering")
    rq_cell.start(worker)
    shown = wait_stage_shown(job.id, "Rendering", marker, within=0.1 + 1.0)
    assert shown.state is State.IN_PROGRESS
    assert wait_state(job.id, State.SUCCEEDED).state_text == State.SUCCEEDED.value


@pytest.mark.parametrize("worker", ["fork", "simple"])
def test_start_and_end_times_are_the_jobs_own(rq_cell, uid, worker):
    """Written in a batch a second later, a job still shows when it started and ended."""
    job = rq_cell.queue.enqueue(jobs.nap, uid, 0.2)
    rq_cell.work(worker, env={"TASKSTATUS_WRITE_INTERVAL": "1"})
    status = taskstatus.get_by_task_id(job.id)
    assert status.state is State.SUCCEEDED
    assert status.finished_at - status.started_at >= timedelta(seconds=0.2)
