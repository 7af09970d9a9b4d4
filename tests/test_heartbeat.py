"""Heartbeats: a task whose worker died does not stay In Progress forever."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import pytest

from taskstatus import State, TaskEvent

from .helpers import event

pytestmark = pytest.mark.timeout(60)

FAST = {"heartbeat_interval": 0.1, "lost_after": 0.6}


def _run_and_die(tracker, task_id: str, ready) -> None:
    """A worker process that starts the task, reports progress, then dies without a word."""
    live = tracker.lifecycle.start(event(task_id))
    live.increment_completed_steps(3)
    live.flush(final=False)
    ready.set()
    time.sleep(0.3)
    os.kill(os.getpid(), signal.SIGKILL)


def _publish(tracker, task_id: str, *, redeliver: bool = False) -> None:
    tracker.lifecycle.publish(
        TaskEvent(
            task_id=task_id,
            queue="test",
            task_class="tests.task",
            user_id="7",
            total_steps=10,
            redeliver_on_loss=redeliver,
        )
    )


def _wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mysql"])
def test_killed_worker_is_detected_and_failed(backend, make_url, make_tracker):
    tracker = make_tracker(make_url(backend), **FAST)
    _publish(tracker, "victim")
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    proc = ctx.Process(target=_run_and_die, args=(tracker, "victim", ready))
    proc.start()
    assert ready.wait(20)
    proc.join(20)
    assert proc.exitcode == -signal.SIGKILL
    assert tracker.get_by_task_id("victim").state is State.IN_PROGRESS

    _wait_for(lambda: tracker.reap_lost() or tracker.get_by_task_id("victim").is_terminal)
    s = tracker.get_by_task_id("victim")
    assert s.state is State.FAILED
    assert [(a.name, a.text) for a in s.artifacts] == [
        ("Error", "The worker running this task was lost.")
    ]


def test_redelivered_task_becomes_retrying(make_url, make_tracker):
    tracker = make_tracker(make_url("sqlite"), **FAST)
    _publish(tracker, "again", redeliver=True)
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    proc = ctx.Process(target=_run_and_die, args=(tracker, "again", ready))
    proc.start()
    assert ready.wait(20)
    proc.join(20)
    _wait_for(lambda: tracker.reap_lost() > 0)
    s = tracker.get_by_task_id("again")
    assert (s.state, s.attempts) == (State.RETRYING, 2)
    # The queue delivers it again: it runs from the start and ends well.
    live = tracker.lifecycle.start(event("again"))
    tracker.lifecycle.end(live)
    s = tracker.get_by_task_id("again")
    assert (s.state, s.attempts, s.completed_steps) == (State.SUCCEEDED, 2, 10)


def test_live_workers_keep_their_tasks(make_url, make_tracker):
    tracker = make_tracker(make_url("sqlite"), **FAST)
    _publish(tracker, "alive")
    live = tracker.lifecycle.start(event("alive"))
    time.sleep(1.5)  # more than lost_after: only the heartbeat thread vouches for it
    assert tracker.reap_lost() == 0
    assert tracker.get_by_task_id("alive").state is State.IN_PROGRESS
    tracker.lifecycle.end(live)
    assert tracker.get_by_task_id("alive").state is State.SUCCEEDED


def test_heartbeat_settings_are_checked():
    from taskstatus import ConfigurationError, Settings

    with pytest.raises(ConfigurationError, match="heartbeat_interval"):
        Settings(heartbeat_interval=60, lost_after=30)
