"""A run handed to a forked child (taskstatus.handoff), with real forks and real databases."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from taskstatus import State, TaskCanceledException, TaskStatus, Tracker
from taskstatus.handoff import HandOff
from taskstatus.models import START

from .helpers import event, publish

pytestmark = pytest.mark.timeout(60)

INTERVAL = 0.05


class Child:
    """A forked child running ``body(tracker)``; it reports a JSON dict back through a pipe,
    with whether it ever connected to the store."""

    def __init__(self, tracker: Tracker, body: Callable[[Tracker], dict[str, Any] | None]):
        self._out, out = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover - the child's side
            try:
                report: dict[str, Any] = body(tracker) or {}
            except BaseException as exc:
                report = {"error": repr(exc)}
            pool = tracker.store.engine.pool  # type: ignore[attr-defined]
            report["connections"] = pool.checkedin() + pool.checkedout()
            os.write(out, json.dumps(report).encode())
            os._exit(0)
        os.close(out)

    def wait(self) -> dict[str, Any]:
        deadline = time.monotonic() + 30
        while os.waitpid(self.pid, os.WNOHANG) == (0, 0):
            assert time.monotonic() < deadline, "the child did not end"
            time.sleep(0.01)
        with os.fdopen(self._out, "rb") as out:
            report: dict[str, Any] = json.loads(out.read() or b"{}")
        assert "error" not in report, report["error"]
        return report


def finish(worker: Tracker, handoff: HandOff) -> TaskStatus:
    """The worker's side once the child has ended: record, write, read back."""
    worker.lifecycle.finish_hand_off(handoff)
    worker.lifecycle.drain()
    return worker.get_by_task_id(handoff.task_id)


def wait_for(read: Callable[[], Any], expected: Any) -> None:
    deadline = time.monotonic() + 10
    while (value := read()) != expected:
        assert time.monotonic() < deadline, f"still {value!r}, expected {expected!r}"
        time.sleep(0.01)


@pytest.fixture
def worker(sql_url: str, make_tracker: Callable[..., Tracker]) -> Tracker:
    """A worker's tracker, batching its writes as a queue adapter's worker does."""
    tracker = make_tracker(sql_url, write_interval=INTERVAL)
    tracker.lifecycle.batch_writes()
    return tracker


def test_short_run_costs_the_child_no_connection(worker):
    publish(worker, "short", total_steps=3)
    handoff = worker.lifecycle.hand_off(event("short"))

    def run(tracker: Tracker) -> None:
        time.sleep(0.3)  # a child slow to start (a loaded machine) still reads nothing
        live = tracker.lifecycle.take_over(handoff)
        live.increment_completed_steps(3)  # counted, not written: the run is short
        tracker.lifecycle.hand_back(handoff, live)

    assert Child(worker, run).wait()["connections"] == 0
    status = finish(worker, handoff)
    assert status.state is State.SUCCEEDED
    assert status.started_at is not None
    assert (status.completed_steps, status.total_steps, status.attempts) == (3, 3, 1)


def test_long_run_shows_in_progress_from_the_worker(worker, make_tracker):
    publish(worker, "long")
    observer = make_tracker(worker.settings.url)
    go_on, told = os.pipe()
    handoff = worker.lifecycle.hand_off(event("long"))

    def run(tracker: Tracker) -> None:
        live = tracker.lifecycle.take_over(handoff)
        os.read(go_on, 1)
        tracker.lifecycle.hand_back(handoff, live)

    child = Child(worker, run)
    wait_for(lambda: observer.get_by_task_id("long").state, State.IN_PROGRESS)
    os.write(told, b"x")
    assert child.wait()["connections"] == 0  # the worker wrote the start, not the child
    status = finish(worker, handoff)
    assert (status.state, status.attempts) == (State.SUCCEEDED, 1)


def test_a_late_start_never_undoes_what_the_child_wrote(worker):
    publish(worker, "retried", total_steps=5)
    handoff = worker.lifecycle.hand_off(event("retried"))

    def run(tracker: Tracker) -> None:
        live = tracker.lifecycle.take_over(handoff)
        live.increment_completed_steps(2)
        live.flush(final=False, force=True)  # the child writes the start, then the steps
        tracker.lifecycle.end(live, exception=RuntimeError("flaky"), retrying=True)
        time.sleep(8 * INTERVAL)  # alive while the worker's own start comes due

    assert Child(worker, run).wait()["connections"] > 0
    status = finish(worker, handoff)
    assert (status.state, status.attempts, status.completed_steps) == (State.RETRYING, 2, 2)


def test_a_success_after_the_childs_own_writes(worker):
    publish(worker, "progress", total_steps=4)
    handoff = worker.lifecycle.hand_off(event("progress"))

    def run(tracker: Tracker) -> None:
        live = tracker.lifecycle.take_over(handoff)
        live.increment_completed_steps(1)
        live.set_state("Halfway")
        live.flush(final=False, force=True)
        tracker.lifecycle.hand_back(handoff, live)

    Child(worker, run).wait()
    status = finish(worker, handoff)
    assert (status.state, status.attempts, status.completed_steps) == (State.SUCCEEDED, 1, 4)
    assert status.started_at is not None


def test_canceled_before_start_is_refused_in_the_child(worker):
    publish(worker, "canceled")
    worker.cancel(worker.get_by_task_id("canceled"))
    time.sleep(4 * INTERVAL)  # the worker's ids of canceled tasks are read again
    handoff = worker.lifecycle.hand_off(event("canceled"))

    def run(tracker: Tracker) -> dict[str, Any]:
        try:
            tracker.lifecycle.take_over(handoff)
        except TaskCanceledException:
            return {"refused": True}
        return {"refused": False}

    assert Child(worker, run).wait()["refused"] is True
    worker.lifecycle.finish_hand_off(handoff)
    assert worker.get_by_task_id("canceled").state is State.CANCELED


def test_without_batching_the_child_records_the_run(sql_url, make_tracker):
    tracker = make_tracker(sql_url, write_interval=0)
    publish(tracker, "direct")
    handoff = tracker.lifecycle.hand_off(event("direct"))

    def run(child: Tracker) -> None:
        child.lifecycle.hand_back(handoff, child.lifecycle.take_over(handoff))

    assert Child(tracker, run).wait()["connections"] > 0
    tracker.lifecycle.finish_hand_off(handoff)
    status = tracker.get_by_task_id("direct")
    assert (status.state, status.attempts) == (State.SUCCEEDED, 1)


def test_transition_unless_changed_since(tracker):
    """The store's side of it, on every backend."""
    status = publish(tracker, "guarded")
    assert status.modified is not None
    before = status.modified - timedelta(seconds=1)
    now = status.modified + timedelta(seconds=1)
    store = tracker.store
    assert store.transition_tasks(["guarded"], START, now, unchanged_since=before) == []
    # Written at the very time: changed since then (a start written at its hand-off time).
    assert store.transition_tasks(["guarded"], START, now, unchanged_since=status.modified) == []
    assert tracker.get_by_task_id("guarded").state is State.PENDING
    since = status.modified + timedelta(microseconds=1)
    changed = store.transition_tasks(["guarded"], START, since, unchanged_since=since)
    assert [key.task_id for key in changed] == ["guarded"]
    started = tracker.get_by_task_id("guarded")
    assert (started.state, started.started_at, started.modified) == (
        State.IN_PROGRESS,
        since,
        since,
    )
    assert store.transition_tasks(["guarded"], START, now, unchanged_since=since) == []
    assert tracker.get_by_task_id("guarded").attempts == 1
