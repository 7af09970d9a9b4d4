"""The lifecycle API (``tracker.lifecycle``) that queue adapters use instead of reaching into
the tracker's store or writer."""

from __future__ import annotations

import threading

import pytest

import taskstatus
from taskstatus import State

from .helpers import event, publish, state

pytestmark = pytest.mark.timeout(60)

#: Long enough that the writer thread never writes on its own during a test.
SLOW = 5.0


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'adapter.db'}"


def test_find_by_task_id_writes_what_is_queued_first(url, make_tracker):
    tracker = make_tracker(url, write_interval=SLOW)
    tracker.lifecycle.batch_writes()
    publish(tracker, "queued")
    tracker.lifecycle.start(event("queued"))
    assert tracker.store.get_by_task_id("queued").state is State.PENDING  # the start waits
    assert tracker.find_by_task_id("queued").state is State.IN_PROGRESS
    assert tracker.find_by_task_id("never-sent") is None


def test_after_write_runs_once_the_queued_success_is_stored(url, make_tracker):
    tracker = make_tracker(url, write_interval=SLOW)
    publish(tracker, "direct")
    assert not tracker.lifecycle.writes_batched
    assert not tracker.lifecycle.after_write(lambda: pytest.fail("nothing is queued: never called"))
    tracker.lifecycle.batch_writes()
    assert tracker.lifecycle.writes_batched
    publish(tracker, "batched")
    tracker.lifecycle.end(tracker.lifecycle.start(event("batched")))
    seen: list[State] = []
    stored = threading.Event()

    def acknowledge() -> None:
        seen.append(tracker.store.get_by_task_id("batched").state)
        stored.set()

    assert tracker.lifecycle.after_write(acknowledge)
    assert stored.wait(30)
    assert seen == [State.SUCCEEDED]


def test_cancel_task_is_a_cancel_request_by_task_id(memory_tracker):
    seen = []

    class Watcher:
        @taskstatus.hookimpl
        def taskstatus_cancel(self, event):
            seen.append(event.exception)

    memory_tracker.register(Watcher())
    publish(memory_tracker, "dependent")
    memory_tracker.lifecycle.cancel(event("dependent"))
    assert state(memory_tracker, "dependent") == "Canceled"
    assert seen == [None]  # a request, as status.cancel(): queue adapters drop its work


def test_end_retrying_without_an_exception_records_a_retry(memory_tracker):
    publish(memory_tracker, "again")
    memory_tracker.lifecycle.end(event("again"), retrying=True)
    status = memory_tracker.get_by_task_id("again")
    assert (status.state, status.attempts) == (State.RETRYING, 2)


def test_lifecycle_find_sees_what_is_queued(url, make_tracker):
    tracker = make_tracker(url, write_interval=SLOW)
    lifecycle = tracker.lifecycle
    lifecycle.batch_writes()
    publish(tracker, "queued")
    lifecycle.start(event("queued"))
    assert lifecycle.find("queued").state is State.IN_PROGRESS
    assert lifecycle.find("never-sent") is None


@pytest.mark.parametrize(
    ("old", "new"),
    [("begin", "start"), ("cancel_task", "cancel"), ("flush", "drain"), ("publish", "publish")],
)
def test_the_adapter_names_of_earlier_releases_still_work_and_warn(url, make_tracker, old, new):
    tracker = make_tracker(url)
    with pytest.warns(DeprecationWarning, match=f"Tracker.{old} is deprecated.*lifecycle.{new}"):
        method = getattr(tracker, old)
    assert method == getattr(tracker.lifecycle, new)


def test_the_old_names_run_the_lifecycle(url, make_tracker):
    tracker = make_tracker(url)
    with pytest.warns(DeprecationWarning, match="Tracker.publish is deprecated"):
        tracker.publish(event("old", user_id="7"))
    with pytest.warns(DeprecationWarning, match="Tracker.begin is deprecated"):
        live = tracker.begin(event("old"))
    with pytest.warns(DeprecationWarning, match="Tracker.end is deprecated"):
        tracker.end(live)
    assert state(tracker, "old") == State.SUCCEEDED


def test_deferral_backs_off_for_store_errors_only(memory_tracker):
    lifecycle = memory_tracker.lifecycle
    down = taskstatus.StoreUnavailable("the database is restarting")
    assert [lifecycle.deferral(down, n) for n in range(8)] == [
        0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0,
    ]  # fmt: skip
    assert lifecycle.deferral(down, 10**6) == 30.0
    assert [lifecycle.deferral(down, n, held=True) for n in range(4)] == [0.5, 1.0, 2.0, 2.0]
    assert lifecycle.deferral(ValueError("a bug in the task's arguments")) is None
