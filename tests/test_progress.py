"""Coalesced progress: few statements for many increments; cancel noticed at the cadence."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import event as sa_event

import taskstatus
from taskstatus import State, TaskCanceledException
from taskstatus.tracking import current

from .helpers import event, publish
from .waiting import poll

pytestmark = pytest.mark.timeout(60)


class Statements:
    def __init__(self, engine) -> None:
        self.count = 0
        sa_event.listen(engine, "before_cursor_execute", self._seen)
        self.engine = engine

    def _seen(self, *args) -> None:
        self.count += 1

    def close(self) -> None:
        sa_event.remove(self.engine, "before_cursor_execute", self._seen)


def test_many_increments_few_statements(sql_url, make_tracker):
    tracker = make_tracker(sql_url, progress_interval=0.5)
    publish(tracker, "t", total_steps=100_000)
    live = tracker.lifecycle.start(event("t"))
    counter = Statements(tracker.store.engine)
    try:
        for _ in range(100_000):
            current().increment_completed_steps()
        during = counter.count
        live.flush()
    finally:
        counter.close()
    # A tight loop of 100k calls takes far less than a second on any machine that can run
    # the suite; even a slow one writes at most once per interval.
    assert during <= 4
    assert tracker.get_by_task_id("t").completed_steps == 100_000


def test_writes_follow_the_interval(memory_tracker):
    writes: list[int] = []

    class Spy:
        import taskstatus

        @taskstatus.hookimpl
        def taskstatus_progress(self, event):
            writes.append(event.completed_delta)

    tracker = memory_tracker
    tracker.settings.__dict__["progress_interval"] = 0.05  # frozen dataclass: test-only tweak
    tracker.register(Spy())
    publish(tracker, "t", total_steps=1000)
    live = tracker.lifecycle.start(event("t"))
    end = time.monotonic() + 0.4
    n = 0
    while time.monotonic() < end:
        live.increment_completed_steps()
        n += 1
        time.sleep(0.001)
    live.flush()
    assert sum(writes) == n
    assert 3 <= len(writes) <= 12


def test_cancel_from_another_thread_is_noticed(sql_url, make_tracker):
    tracker = make_tracker(sql_url, progress_interval=0.2)
    publish(tracker, "t", total_steps=10**9)
    live = tracker.lifecycle.start(event("t"))
    canceled_at: list[float] = []

    def cancel_soon() -> None:
        time.sleep(0.3)
        tracker.cancel(tracker.get_by_task_id("t").uuid)
        canceled_at.append(time.monotonic())

    threading.Thread(target=cancel_soon).start()
    deadline = time.monotonic() + 20
    with pytest.raises(TaskCanceledException):
        while time.monotonic() < deadline:
            live.increment_completed_steps()
            time.sleep(0.0005)
    noticed = time.monotonic()
    tracker.lifecycle.end(live, exception=TaskCanceledException())
    assert canceled_at and noticed >= canceled_at[0]
    assert tracker.get_by_task_id("t").state is State.CANCELED


def test_current_outside_a_task():
    with pytest.raises(RuntimeError, match="only available inside a running tracked task"):
        current()


def test_current_is_cleared_after_the_task(memory_tracker):
    publish(memory_tracker, "t")
    live = memory_tracker.lifecycle.start(event("t"))
    assert current() is live
    memory_tracker.lifecycle.end(live)
    with pytest.raises(RuntimeError):
        current()


def test_bad_increments_are_rejected(memory_tracker):
    publish(memory_tracker, "t")
    live = memory_tracker.lifecycle.start(event("t"))
    with pytest.raises(ValueError, match="steps"):
        live.increment_completed_steps(-1)
    with pytest.raises(TypeError, match="steps must be an int"):
        live.increment_completed_steps("3")
    with pytest.raises(ValueError, match="set_state"):
        live.set_state("")


def test_store_failure_during_progress_keeps_the_counts(sql_url, make_tracker, monkeypatch):
    from taskstatus import StoreUnavailable

    tracker = make_tracker(sql_url, progress_interval=0)
    publish(tracker, "t", total_steps=100)
    live = tracker.lifecycle.start(event("t"))
    real = tracker.store.add_steps

    def broken(*args, **kwargs):
        raise StoreUnavailable("database went away")

    monkeypatch.setattr(tracker.store, "add_steps", broken)
    live.increment_completed_steps(5)  # logged, kept for the next write
    live.increment_completed_steps(2)
    with pytest.raises(StoreUnavailable):
        live.flush()  # the final write is loud
    monkeypatch.setattr(tracker.store, "add_steps", real)
    live.flush()
    assert tracker.get_by_task_id("t").completed_steps == 7


def test_every_call_after_a_noticed_cancel_raises(memory_tracker):
    publish(memory_tracker, "t")
    live = memory_tracker.lifecycle.start(event("t"))
    memory_tracker.cancel(memory_tracker.get_by_task_id("t").uuid)
    with pytest.raises(TaskCanceledException):
        live.check_canceled()
    for call in (
        live.increment_completed_steps,
        lambda: live.set_state("x"),
        lambda: live.increment_total_steps(1),
    ):
        with pytest.raises(TaskCanceledException):
            call()


class ProgressWrites:
    """A plugin that notes which thread made each progress write."""

    def __init__(self) -> None:
        self.threads: list[str] = []

    @taskstatus.hookimpl
    def taskstatus_progress(self, event) -> None:
        self.threads.append(threading.current_thread().name)


def test_progress_left_pending_is_written_without_another_call(sql_url, make_tracker):
    """Steps and a stage counted just after a write, then nothing for long: written once the
    interval has passed, not at the task's next call."""
    tracker = make_tracker(sql_url, progress_interval=0.2)
    publish(tracker, "t", total_steps=10)
    live = tracker.lifecycle.start(event("t"))
    live.increment_completed_steps(3)
    live.increment_total_steps(2)
    live.set_state("Rendering")
    counted = time.monotonic()
    shown = poll(
        lambda: tracker.get_by_task_id("t"),
        lambda s: (s.completed_steps, s.total_steps, s.state_text) == (3, 12, "Rendering"),
        "the pending progress",
        timeout=5,
    )
    assert time.monotonic() - counted < 0.2 + 1.0, shown
    live.increment_completed_steps()  # counted once: the trailing write is not repeated
    tracker.lifecycle.end(live, exception=RuntimeError("stop"))
    assert tracker.get_by_task_id("t").completed_steps == 4


def test_cancel_found_by_a_trailing_write_raises_at_the_next_call(sql_url, make_tracker):
    tracker = make_tracker(sql_url, progress_interval=0.2)
    writes = ProgressWrites()
    tracker.register(writes)
    publish(tracker, "t", total_steps=10)
    live = tracker.lifecycle.start(event("t"))
    live.increment_completed_steps()
    tracker.cancel(tracker.get_by_task_id("t").uuid)
    poll(lambda: writes.threads, lambda t: "taskstatus-heartbeat" in t, "a trailing write")
    with live._lock:  # held by the trailing write until it has seen its outcome
        pass
    counter = Statements(tracker.store.engine)
    try:
        with pytest.raises(TaskCanceledException):
            live.increment_completed_steps()
    finally:
        counter.close()
    assert counter.count == 0  # found by the trailing write: no query of its own
    tracker.lifecycle.end(live, exception=TaskCanceledException())
    assert tracker.get_by_task_id("t").state is State.CANCELED


def test_a_task_repeating_its_stage_notices_a_cancel(sql_url, make_tracker):
    """Each set_state() is a write to make once the interval has passed, even with the text
    already shown: a task that only repeats its stage still stops when canceled."""
    tracker = make_tracker(sql_url, progress_interval=0.05)
    publish(tracker, "t")
    live = tracker.lifecycle.start(event("t"))
    live.set_state("Working")
    poll(lambda: tracker.get_by_task_id("t").state_text, lambda s: s == "Working", "the stage")
    tracker.cancel(tracker.get_by_task_id("t").uuid)
    deadline = time.monotonic() + 5
    with pytest.raises(TaskCanceledException):
        while time.monotonic() < deadline:
            live.set_state("Working")
            time.sleep(0.01)
    tracker.lifecycle.end(live, exception=TaskCanceledException())
