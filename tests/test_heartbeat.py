"""Heartbeats: a task whose worker died does not stay In Progress forever."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from datetime import datetime, timedelta, timezone

import pytest

from taskstatus import State, StoreUnavailable, TaskEvent
from taskstatus.heartbeat import Heartbeat

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


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mysql"])
def test_an_idle_worker_reaps(backend, make_url, make_tracker):
    """A worker that never runs a task of its own still ends those of a dead worker."""
    tracker = make_tracker(make_url(backend), **FAST)
    _publish(tracker, "orphan")
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    proc = ctx.Process(target=_run_and_die, args=(tracker, "orphan", ready))
    proc.start()
    assert ready.wait(20)
    proc.join(20)
    tracker.lifecycle.worker_started()
    _wait_for(lambda: tracker.get_by_task_id("orphan").is_terminal, timeout=5)
    assert tracker.get_by_task_id("orphan").state is State.FAILED


def _report_reaping(tracker, answer) -> None:
    tracker.lifecycle.worker_started()  # as a prefork pool child's start does
    tracker.heartbeat.add("child-task")
    answer.send(tracker.heartbeat._reaps())


def test_a_child_of_a_reaping_worker_leaves_reaping_to_it(make_url, make_tracker):
    tracker = make_tracker(make_url("sqlite"), **FAST)
    tracker.lifecycle.worker_started()
    ctx = multiprocessing.get_context("fork")
    mine, theirs = ctx.Pipe()
    proc = ctx.Process(target=_report_reaping, args=(tracker, theirs))
    proc.start()
    assert mine.poll(20)
    assert mine.recv() is False
    proc.join(20)
    assert tracker.heartbeat._reaps()


class _Store:
    """What a heartbeat's rounds see: a store that is down while ``down`` is set."""

    def __init__(self) -> None:
        self.down = False
        self.judged: list[tuple[float, datetime]] = []  # (monotonic time, before)

    def beat(self, task_ids) -> None:
        if self.down:
            raise StoreUnavailable("the store is down")

    def reap_lost(self, before: datetime) -> None:
        if self.down:
            raise StoreUnavailable("the store is down")
        self.judged.append((time.monotonic(), before))


def test_after_an_outage_the_reaper_judges_only_stamps_due_before_it():
    """Stamps due while the store was down could not be written: until the store has been
    healthy for lost_after, the reaper judges only stamps that were stale before the outage."""
    store, lost_after = _Store(), 0.6
    heartbeat = Heartbeat(store.beat, store.reap_lost, 0.05, lost_after)
    try:
        heartbeat.start_reaping()
        _wait_for(lambda: len(store.judged) >= 3, timeout=5)
        store.down = True
        down_at = datetime.now(timezone.utc)  # no round that succeeded started later
        time.sleep(0.5)
        down_from = len(store.judged)
        store.down = False
        back_at = time.monotonic()
        _wait_for(lambda: store.judged[-1][0] > back_at + lost_after + 0.2, timeout=5)
    finally:
        heartbeat.stop()
    after = store.judged[down_from:]
    quarantined = [before for at, before in after if at < back_at + lost_after]
    assert quarantined
    assert all(before < down_at - timedelta(seconds=lost_after) for before in quarantined)
    # Then stamps are judged as usual again: lost_after before each round.
    assert after[-1][1] > datetime.now(timezone.utc) - timedelta(seconds=lost_after + 0.5)


def _settled(looks: list[int]) -> int:
    """How many looks the thread has taken once it stops taking them (0.3 s with none)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        seen = len(looks)
        time.sleep(0.3)
        if len(looks) == seen:
            return seen
    raise AssertionError("the heartbeat thread never settled")


def test_short_tasks_in_a_row_do_not_wake_the_thread_each(make_tracker, monkeypatch):
    """Each task's progress deadline used to wake the thread from its sleep until the next
    beat as soon as the task before had ended: a thread switch per task."""
    tracker = make_tracker(
        "memory://", progress_interval=30, heartbeat_interval=600, lost_after=1200
    )
    heartbeat = tracker.heartbeat
    looks: list[int] = []
    real = heartbeat._write_pending

    def counted(live):
        looks.append(len(live))
        return real(live)

    monkeypatch.setattr(heartbeat, "_write_pending", counted)
    lifecycle = tracker.lifecycle
    for i in range(6):
        _publish(tracker, f"short-{i}")
    lifecycle.end(lifecycle.start(event("short-0")))
    # The thread looked (the task may have ended by then) and sleeps until it is due again;
    # a wake from before (its own start, short-0's deadline) may still be on its way.
    _wait_for(lambda: looks and heartbeat._wake_at < float("inf"))
    seen = _settled(looks)
    for i in range(1, 6):
        lifecycle.end(lifecycle.start(event(f"short-{i}")))
    time.sleep(0.3)  # time enough for the thread to look again, had it been woken
    assert len(looks) == seen
