"""The Dramatiq adapter with real ``dramatiq`` worker processes on Redis and RabbitMQ."""

from __future__ import annotations

from pathlib import Path

import dramatiq
import pytest

import taskstatus
from taskstatus import State
from tests.queue_dramatiq import actors
from tests.waiting import (
    error_texts,
    find,
    poll,
    settled,
    wait_failed,
    wait_stage_shown,
    wait_state,
)

pytestmark = pytest.mark.timeout(120)


def test_progress_and_success(cell, uid):
    message = actors.count.send(uid, 3)
    status = wait_state(message.message_id, State.SUCCEEDED)
    assert (status.completed_steps, status.total_steps, status.attempts) == (3, 3, 1)
    assert status.name == "Count to 3"


def test_failure(cell, uid):
    message = actors.explode.send(uid, "bad header")
    wait_failed(message.message_id)
    # The traceback is a write of its own, after the state change: read once it is there.
    status = poll(lambda: find(message.message_id), lambda s: bool(s.traceback), "the traceback")
    assert error_texts(status) == ["ValueError: bad header"]
    assert "ValueError: bad header" in (status.traceback or "")


def test_retry_counts_an_attempt(cell, uid, tmp_path: Path):
    message = actors.flaky.send(uid, str(tmp_path / "marker"))
    status = wait_state(message.message_id, State.SUCCEEDED)
    assert status.attempts == 2


def test_stage_and_artifacts(cell, uid):
    message = actors.stages.send(uid)
    running = poll(
        lambda: find(message.message_id),
        lambda s: s is not None and s.state_text == "Sending emails",
        "the custom stage",
    )
    assert running.state is State.IN_PROGRESS
    status = wait_state(message.message_id, State.SUCCEEDED)
    by_name = {a.name: a for a in status.artifacts}
    assert by_name["Report"].open().read() == b"a,b\n1,2\n"
    assert (by_name["Link"].url, by_name["Summary"].text) == ("https://example.com/r/1", "2 rows")


def test_missing_owner_sends_nothing(cell):
    with pytest.raises(TypeError, match="user_id"):
        actors.add.send(1, 2)


def test_untracked_actor_is_untouched(cell, uid):
    message = actors.untracked.send(21)
    marker = actors.count.send(uid, 1)  # same queue, after it
    wait_state(marker.message_id, State.SUCCEEDED)
    assert find(message.message_id) is None


def test_cancel_pending_never_runs_the_body(cell, uid, tmp_path: Path):
    marker = tmp_path / "ran"
    message = actors.long_running.send_with_options(
        args=(uid, str(marker)), kwargs={"seconds": 0.1}, delay=1500
    )
    wait_state(message.message_id, State.PENDING).cancel()
    later = actors.count.send_with_options(args=(uid, 1), delay=2500)
    wait_state(later.message_id, State.SUCCEEDED, timeout=60)  # the worker got past it
    assert not marker.exists()
    assert taskstatus.get_by_task_id(message.message_id).state is State.CANCELED


def test_cancel_running(cell, uid, tmp_path: Path):
    marker = tmp_path / "running"
    message = actors.long_running.send(uid, str(marker), seconds=20)
    poll(marker.exists, bool, "the task to start")
    wait_state(message.message_id, State.IN_PROGRESS).cancel()
    later = actors.count.send(uid, 1)
    wait_state(later.message_id, State.SUCCEEDED)
    status = taskstatus.get_by_task_id(message.message_id)
    assert status.state is State.CANCELED
    assert error_texts(status) == []


def test_pipeline_with_a_failing_step(cell, uid):
    dramatiq.pipeline(
        [
            actors.add.message(1, 2, user_id=uid),
            actors.explode.message_with_options(args=(uid, "no"), pipe_ignore=True),
            actors.add.message(3),
        ]
    ).run()
    root = settled(uid)
    assert (root.task_class, root.state) == ("dramatiq.pipeline", State.FAILED)
    assert sorted(s.state.value for s in root.children()) == ["Canceled", "Failed", "Succeeded"]


def test_group_and_taskstatus_group(cell, uid):
    with taskstatus.group("Nightly", user_id=uid):
        dramatiq.group(actors.add.message(i, i, user_id=uid) for i in range(3)).run()
        actors.count.send(uid, 2)
    root = settled(uid)
    assert (root.task_class, root.state) == ("taskstatus.group", State.SUCCEEDED)
    kinds = sorted(c.task_class for c in root.children())
    assert kinds == ["dramatiq.group", "tests.queue_dramatiq.actors.count"]


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_killed_worker_redelivers_and_counts_an_attempt(make_cell, broker, uid, tmp_path: Path):
    cell = make_cell(broker, "sqlite")
    first = cell.start_worker()
    marker = tmp_path / "runs"
    message = actors.fragile.send(uid, str(marker), seconds=3.0)
    poll(lambda: marker.exists() and marker.read_text().count("\n"), bool, "the first run")
    wait_state(message.message_id, State.IN_PROGRESS)
    cell.kill(first)  # SIGKILL mid-message: no ack
    cell.start_worker()
    status = wait_state(message.message_id, State.SUCCEEDED, timeout=60)
    assert marker.read_text().count("\n") == 2
    assert status.attempts == 2


def test_worker_start_logs_nothing_from_alembic(make_cell, uid):
    """Workers open a store whose schema is current: Alembic has nothing to say at INFO."""
    cell = make_cell("redis", "sqlite")
    cell.start_worker()
    log = cell.tmp / "worker-0.log"
    poll(
        lambda: log.read_text(errors="replace"),
        lambda text: text.count("Worker process is ready for action") == 2,
        "both worker processes to start",
    )
    message = actors.count.send(uid, 1)
    wait_state(message.message_id, State.SUCCEEDED)
    text = log.read_text(errors="replace")
    assert "[INFO]" in text  # the worker does log at INFO
    assert "alembic" not in text.lower(), text


def test_stage_shows_while_the_task_is_quiet(cells, uid, tmp_path: Path):
    """A stage set before a long stretch without progress calls is written within the
    progress interval, not when the task next reports (here: when it ends)."""
    cell = cells("redis", "sqlite")
    cell.activate()
    marker = tmp_path / "running"
    message = actors.quiet_stage.send(uid, str(marker), "Rendering")
    shown = wait_stage_shown(message.message_id, "Rendering", marker, within=0.1 + 1.0)
    assert shown.state is State.IN_PROGRESS
    wait_state(message.message_id, State.SUCCEEDED)
