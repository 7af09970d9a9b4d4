"""Single tracked tasks on a real worker, on every broker x store combination."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from celery.exceptions import TaskRevokedError

import taskstatus
from taskstatus import State
from tests.queue_celery import app as tasks

from .conftest import TIMEOUT, Cell, error_texts, find, poll, wait_retrying, wait_state

pytestmark = pytest.mark.timeout(90)


def test_progress_and_success(cell: Cell, uid: int) -> None:
    result = tasks.count.delay(uid, 8, delay=0.15)
    running = poll(
        lambda: find(result.id),
        lambda s: s is not None and s.state is State.IN_PROGRESS and 0 < s.completed_steps < 8,
        "progress between the first and the last step",
    )
    assert running.total_steps == 8
    assert running.started_at is not None
    assert running.finished_at is None

    assert result.get(timeout=TIMEOUT) == 8
    status = wait_state(result.id, State.SUCCEEDED)
    assert (status.completed_steps, status.total_steps) == (8, 8)
    assert status.name == "Count to 8"
    assert status.user_id == str(uid)
    assert (status.queue, status.task_class) == ("celery", "tests.queue_celery.app.count")
    assert status.attempts == 1
    assert status.started_at is not None
    assert status.finished_at is not None
    assert status.started_at <= status.finished_at
    assert status.artifacts == []
    assert [s.uuid for s in taskstatus.statuses(user_id=uid)] == [status.uuid]


def test_status_is_pending_until_a_worker_takes_it(cell: Cell, uid: int) -> None:
    queue = cell.new_queue()  # nobody consumes it
    result = tasks.count.apply_async((uid, 4), queue=queue)
    status = taskstatus.get_by_task_id(result.id)
    assert status.state is State.PENDING
    assert (status.completed_steps, status.total_steps, status.attempts) == (0, 4, 1)
    assert status.started_at is None
    assert status.finished_at is None
    assert poll(lambda: cell.queue_length(queue), bool, "the message to arrive") == 1


def test_failure_keeps_error_artifact_and_traceback(cell: Cell, uid: int) -> None:
    result = tasks.explode.delay(uid, message="row 3 has no id")
    with pytest.raises(ValueError, match="row 3 has no id"):
        result.get(timeout=TIMEOUT)
    status = wait_state(result.id, State.FAILED)
    assert [(a.name, a.text, a.file, a.url) for a in status.artifacts] == [
        ("Error", "ValueError: row 3 has no id", None, None)
    ]
    assert status.traceback is not None
    assert "in explode" in status.traceback
    assert status.traceback.rstrip().endswith("ValueError: row 3 has no id")
    assert status.attempts == 1
    assert status.finished_at is not None


def test_retry_counts_attempts(cell: Cell, uid: int) -> None:
    result = tasks.flaky.delay(uid, fail_times=1, countdown=1)
    waiting = wait_retrying(result.id)
    assert waiting.attempts == 2
    assert "OSError: temporary failure" in waiting.traceback
    assert result.get(timeout=TIMEOUT) == 1
    status = wait_state(result.id, State.SUCCEEDED)
    assert status.attempts == 2
    assert status.artifacts == []


def test_retry_with_an_exception_never_raised_keeps_it(one_cell: Cell, uid: int) -> None:
    # self.retry(exc=OSError("busy")) outside an except block: no exception is being handled.
    result = tasks.busy.delay(uid)
    waiting = wait_retrying(result.id)
    assert waiting.attempts == 2
    assert waiting.traceback.startswith("Traceback (most recent call last):")
    assert 'raise self.retry(exc=OSError("busy")' in waiting.traceback  # where it retried
    assert waiting.traceback.rstrip().endswith("OSError: busy")
    assert result.get(timeout=TIMEOUT) == "done"
    assert wait_state(result.id, State.SUCCEEDED).attempts == 2


def test_retry_is_recorded_after_its_runs_progress(make_cell, uid: int, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cell: Cell = make_cell("redis", "sqlite")
    log = tmp_path / "retries"
    cell.start_worker(env={"TS_TEST_RETRY_LOG": str(log)})
    # Its one step is counted just before the retry, well within a progress interval.
    result = tasks.busy.delay(uid, countdown=0)
    assert result.get(timeout=TIMEOUT) == "done"
    assert log.read_text() == "Retrying 1/3\n"


def test_retries_exhausted_fail_with_the_last_error(cell: Cell, uid: int) -> None:
    result = tasks.flaky.delay(uid, fail_times=10, countdown=0.5)  # max_retries=3
    with pytest.raises(OSError, match="temporary failure"):
        result.get(timeout=TIMEOUT)
    status = wait_state(result.id, State.FAILED)
    assert status.attempts == 4
    assert error_texts(status) == ["OSError: temporary failure"]


def test_custom_stage_stays_in_progress(cell: Cell, uid: int, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    result = tasks.gated.delay(uid, str(gate), stage="Sending emails")
    running = poll(
        lambda: find(result.id),
        lambda s: s is not None and s.state_text == "Sending emails",
        "the custom stage",
    )
    assert running.state is State.IN_PROGRESS
    in_progress = taskstatus.statuses(user_id=uid, state=State.IN_PROGRESS)
    assert [s.uuid for s in in_progress] == [running.uuid]

    gate.touch()
    assert result.get(timeout=TIMEOUT) == "opened"
    done = wait_state(result.id, State.SUCCEEDED)
    assert done.state_text == "Succeeded"


def test_artifacts_file_url_and_text(cell: Cell, uid: int) -> None:
    result = tasks.produce.delay(uid)
    result.get(timeout=TIMEOUT)
    status = wait_state(result.id, State.SUCCEEDED)
    found = {a.name: a for a in status.artifacts}
    assert sorted(found) == ["Link", "Output", "Summary"]

    output = found["Output"]
    assert (output.filename, output.url, output.text) == ("export.csv", None, None)
    with output.open() as f:
        assert f.read() == b"id,name\n1,x\n"
    with taskstatus.get_tracker().get_artifact(output.uuid).open() as f:
        assert f.read() == b"id,name\n1,x\n"
    assert (found["Link"].url, found["Link"].file, found["Link"].text) == (
        "https://example.com/report/1",
        None,
        None,
    )
    assert (found["Summary"].text, found["Summary"].file, found["Summary"].url) == (
        "1 row",
        None,
        None,
    )


def test_cancel_pending_task_never_runs(cell: Cell, uid: int, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    result = tasks.sleepy.apply_async((uid,), {"seconds": 0.1, "marker": str(marker)}, countdown=2)
    status = taskstatus.get_by_task_id(result.id)
    assert status.state is State.PENDING
    status.cancel()
    assert status.state is State.CANCELED

    # The worker holds the message until its countdown ends, then discards it as revoked.
    with pytest.raises(TaskRevokedError):
        result.get(timeout=TIMEOUT)
    assert not marker.exists()
    final = taskstatus.get(status.uuid)
    assert final.state is State.CANCELED
    assert final.started_at is None
    assert final.artifacts == []


def test_cancel_running_task(cell: Cell, uid: int, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    result = tasks.sleepy.delay(uid, seconds=30, marker=str(marker))
    running = wait_state(result.id, State.IN_PROGRESS)
    running.cancel()
    assert running.state is State.CANCELED

    cell.wait_stopped(result.id)  # long before its 30 seconds
    assert marker.read_text() == f"{result.id}\n"
    final = taskstatus.get(running.uuid)
    assert final.state is State.CANCELED
    assert final.artifacts == []
    assert final.started_at is not None
    assert final.finished_at is not None


def test_cancel_of_a_finished_task_revokes_nothing(one_cell: Cell, uid: int) -> None:
    done = tasks.add.delay(1, 2, user_id=uid)
    assert done.get(timeout=TIMEOUT) == 3
    failed = tasks.explode.delay(uid)
    with pytest.raises(ValueError):
        failed.get(timeout=TIMEOUT)
    finished = [wait_state(done.id, State.SUCCEEDED), wait_state(failed.id, State.FAILED)]
    for status in finished:
        ended = status.state
        status.cancel()
        assert status.state is ended
    # A Pending task's revoke, broadcast after theirs would have been: once the worker has
    # logged it, it has handled every revoke sent before.
    pending = tasks.count.apply_async((uid, 1), queue=one_cell.new_queue())
    taskstatus.get_by_task_id(pending.id).cancel()
    (worker,) = one_cell.workers
    worker.wait_log(f"Tasks flagged as revoked: {pending.id}")
    revoked = [line for line in worker.log.read_text().splitlines() if "revoked" in line]
    assert [line for line in revoked if done.id in line or failed.id in line] == []


def test_cancel_with_terminate_stops_a_task_that_never_checks(cell: Cell, uid: int) -> None:
    result = tasks.stubborn.delay(uid, seconds=30)
    running = wait_state(result.id, State.IN_PROGRESS)
    running.cancel(terminate=True)
    with pytest.raises(TaskRevokedError):
        result.get(timeout=TIMEOUT)
    final = taskstatus.get(running.uuid)
    assert final.state is State.CANCELED
    assert final.artifacts == []


@pytest.mark.parametrize(
    "send",
    [
        lambda tid: tasks.add.delay(1, 2),
        lambda tid: tasks.add.apply_async((1, 2), {"user_id": "  "}, task_id=tid),
        lambda tid: tasks.count.apply_async((None, 3), task_id=tid),
        lambda tid: tasks.export.apply_async((None, "Biology"), task_id=tid),
    ],
    ids=["delay-omitted", "blank", "none", "user-task"],
)
def test_missing_owner_raises_and_sends_nothing(cell: Cell, send) -> None:  # type: ignore[no-untyped-def]
    queue = cell.new_queue()  # nobody consumes it
    tasks.app.conf.task_default_queue = queue
    task_id = str(uuid.uuid4())
    with pytest.raises(TypeError, match="user_id"):
        send(task_id)
    assert find(task_id) is None

    # A message sent after it is the only one in the queue.
    tasks.untracked.delay(1)
    assert poll(lambda: cell.queue_length(queue), bool, "the untracked message") == 1


def test_acks_late_outcome_is_written_before_the_ack(cell: Cell, uid: int) -> None:
    # The worker batches writes, but not past the acknowledgement of an acks_late message:
    # a worker killed right after the ack must not lose the outcome.
    result = tasks.acked_late.delay(uid, 5)
    assert result.get(timeout=TIMEOUT) == 5
    assert find(result.id).state is State.SUCCEEDED  # type: ignore[union-attr]


def test_untracked_task_is_untouched(cell: Cell) -> None:
    result = tasks.untracked.delay(21)
    assert result.get(timeout=TIMEOUT) == 42
    assert find(result.id) is None


def test_user_task_base_class(cell: Cell, uid: int) -> None:
    result = tasks.export.delay(uid, "Biology")
    assert result.get(timeout=TIMEOUT) == "Biology"
    status = wait_state(result.id, State.SUCCEEDED)
    assert status.name == "Export Biology"
    assert status.task_class == "taskstatus_tests.Export"
    assert (status.completed_steps, status.total_steps) == (3, 3)
    assert status.user_id == str(uid)
    assert tasks.export.arguments_as_dict(uid, course="Biology") == {
        "user_id": uid,
        "course": "Biology",
    }


def test_immediate_retry_is_counted_once(one_cell: Cell, uid: int, tmp_path: Path) -> None:
    marker = tmp_path / "second-run"
    result = tasks.retry_at_once.delay(uid, str(marker), run_for=2.0)
    poll(marker.exists, bool, "the second run")
    # The second run (2 s long) shows as In Progress, once its worker has written its start.
    assert wait_state(result.id, State.IN_PROGRESS, timeout=1.5).attempts == 2
    assert result.get(timeout=TIMEOUT) == 1
    final = wait_state(result.id, State.SUCCEEDED)
    assert final.attempts == 2
