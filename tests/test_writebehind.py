"""Batched task starts and successes in worker processes (``Tracker.batch_writes``)."""

from __future__ import annotations

import multiprocessing
import time
from datetime import datetime, timedelta, timezone

import pytest

import taskstatus
import taskstatus.backends.sqlalchemy as sql_store
from taskstatus import State, StoreUnavailable, TaskCanceledException, TaskEvent, models

from .helpers import event, publish, state

pytestmark = pytest.mark.timeout(60)

#: Long enough that the background thread never writes during a test that flushes itself.
SLOW = 5.0


def _worker(make_tracker, url: str, interval: float = SLOW):
    tracker = make_tracker(url, write_interval=interval)
    tracker.lifecycle.batch_writes()
    return tracker


def _run(tracker, task_id: str) -> None:
    tracker.lifecycle.end(tracker.lifecycle.start(event(task_id)))


def test_starts_and_successes_wait_for_one_batch(any_url, make_tracker):
    tracker = _worker(make_tracker, any_url)
    ids = [f"t{i}" for i in range(25)]
    for task_id in ids:
        publish(tracker, task_id, total_steps=3)
    for task_id in ids:
        _run(tracker, task_id)
    # Nothing written yet (read the store itself: reads through the tracker flush first).
    assert {tracker.store.get_by_task_id(t).state for t in ids} == {State.PENDING}
    tracker.lifecycle.drain()
    for task_id in ids:
        status = tracker.store.get_by_task_id(task_id)
        assert status.state is State.SUCCEEDED
        assert (status.completed_steps, status.total_steps, status.attempts) == (3, 3, 1)
        assert status.started_at is not None and status.finished_at is not None


def test_the_writer_thread_writes_within_the_interval(sql_url, make_tracker):
    tracker = _worker(make_tracker, sql_url, interval=0.05)
    publish(tracker, "quick")
    _run(tracker, "quick")
    deadline = time.monotonic() + 10
    while tracker.store.get_by_task_id("quick").state is not State.SUCCEEDED:
        assert time.monotonic() < deadline, "the batch was never written"
        time.sleep(0.02)


def test_reads_through_the_tracker_see_queued_writes(any_url, make_tracker):
    tracker = _worker(make_tracker, any_url)
    publish(tracker, "mine")
    live = tracker.lifecycle.start(event("mine"))
    assert tracker.get_by_task_id("mine").state is State.IN_PROGRESS
    tracker.lifecycle.end(live)
    assert tracker.statuses(user_id=7)[0].state is State.SUCCEEDED


def test_work_canceled_before_it_started_is_refused_at_once(sql_url, make_tracker):
    web = make_tracker(sql_url)  # another process: the one where the user clicks Cancel
    worker = _worker(make_tracker, sql_url, interval=0.05)
    publish(web, "busy")
    _run(worker, "busy")  # the worker has polled for cancels; its view is fresh
    publish(web, "doomed")
    web.cancel(web.get_by_task_id("doomed"))
    time.sleep(0.3)  # past the freshness of the worker's last poll
    with pytest.raises(TaskCanceledException):
        worker.lifecycle.start(event("doomed"))
    worker.lifecycle.end(event("doomed"), exception=TaskCanceledException("skipped"))
    status = worker.get_by_task_id("doomed")
    assert status.state is State.CANCELED and status.started_at is None


def test_a_cancel_racing_the_start_is_noticed_at_the_first_progress(sql_url, make_tracker):
    web = make_tracker(sql_url)
    worker = _worker(make_tracker, sql_url)
    publish(web, "racing", total_steps=10)
    live = worker.lifecycle.start(event("racing"))  # queued, not written
    web.cancel(web.get_by_task_id("racing"))  # lands before the start is written
    with pytest.raises(TaskCanceledException):
        live.increment_completed_steps()
        live.flush(final=False, force=True)
    worker.lifecycle.end(live, exception=TaskCanceledException("stopped"))
    assert worker.get_by_task_id("racing").state is State.CANCELED


def test_containers_end_and_stopped_fires_once_per_status(any_url, make_tracker):
    tracker = _worker(make_tracker, any_url)
    stopped: list[str] = []

    class Listen:
        @taskstatus.hookimpl
        def taskstatus_stopped(self, status):
            stopped.append(status.task_id)

    tracker.register(Listen())
    publish(tracker, "box", container="taskstatus.group", sealed=False, total_steps=0)
    for i in range(3):
        publish(tracker, f"child{i}", parent="box", total_steps=2)
    tracker.lifecycle.seal("box")
    for i in range(3):
        _run(tracker, f"child{i}")
    tracker.lifecycle.drain()
    box = tracker.get_by_task_id("box")
    assert box.state is State.SUCCEEDED
    assert box.started_at is not None
    assert (box.completed_steps, box.total_steps) == (6, 6)
    assert sorted(stopped) == ["box", "child0", "child1", "child2"]


def test_a_redelivery_in_the_same_batch_counts_one_more_attempt(any_url, make_tracker):
    tracker = _worker(make_tracker, any_url)
    publish(tracker, "again")
    tracker.lifecycle.release(
        tracker.lifecycle.start(event("again"))
    )  # the worker gave the message back
    _run(tracker, "again")
    tracker.lifecycle.drain()
    status = tracker.store.get_by_task_id("again")
    assert (status.state, status.attempts) == (State.SUCCEEDED, 2)


def test_progress_is_written_after_the_queued_start(any_url, make_tracker):
    tracker = _worker(make_tracker, any_url)
    publish(tracker, "ticks", total_steps=10)
    live = tracker.lifecycle.start(event("ticks"))
    live.increment_completed_steps(4)
    live.flush(final=False, force=True)  # writes the start first, then the steps
    status = tracker.store.get_by_task_id("ticks")
    assert (status.state, status.completed_steps) == (State.IN_PROGRESS, 4)
    tracker.lifecycle.end(live)


def test_a_task_nobody_published_is_recorded_by_the_batch(any_url, make_tracker):
    tracker = _worker(make_tracker, any_url)
    tracker.lifecycle.end(
        tracker.lifecycle.start(event("eager", user_id="7", name="Eager one", total_steps=2))
    )
    tracker.lifecycle.drain()
    status = tracker.store.get_by_task_id("eager")
    assert (status.state, status.name, status.user_id) == (State.SUCCEEDED, "Eager one", "7")


def test_a_failed_batch_stays_queued_and_is_written_later(sql_url, make_tracker, monkeypatch):
    tracker = _worker(make_tracker, sql_url)
    publish(tracker, "short")
    publish(tracker, "long")
    _run(tracker, "short")  # started and ended: one write
    live = tracker.lifecycle.start(event("long"))  # started only: written first
    real = tracker.store.end_tasks

    def ends_unavailable(task_ids, transition, now, **options):
        raise StoreUnavailable("database error: server closed the connection")

    # The start is written, then the store fails: only the other write stays queued.
    monkeypatch.setattr(tracker.store, "end_tasks", ends_unavailable)
    with pytest.raises(StoreUnavailable):
        tracker.lifecycle.drain()
    assert tracker.store.get_by_task_id("long").state is State.IN_PROGRESS
    assert tracker.store.get_by_task_id("short").state is State.PENDING
    monkeypatch.setattr(tracker.store, "end_tasks", real)
    tracker.lifecycle.drain()
    short, long = (tracker.store.get_by_task_id(t) for t in ("short", "long"))
    assert (short.state, short.attempts) == (State.SUCCEEDED, 1)
    # Written once: a start written twice would count a second attempt.
    assert (long.state, long.attempts) == (State.IN_PROGRESS, 1)
    tracker.lifecycle.end(live)


def _flush_in_child(tracker) -> None:
    tracker.lifecycle.drain()  # the child has nothing queued: the parent's events are not its own


def test_a_forked_child_never_writes_its_parents_queue(sql_url, make_tracker):
    tracker = _worker(make_tracker, sql_url)
    publish(tracker, "parents")
    live = tracker.lifecycle.start(event("parents"))
    child = multiprocessing.get_context("fork").Process(target=_flush_in_child, args=(tracker,))
    child.start()
    child.join(timeout=30)
    assert child.exitcode == 0
    assert tracker.store.get_by_task_id("parents").state is State.PENDING
    tracker.lifecycle.end(live)
    tracker.lifecycle.drain()
    status = tracker.store.get_by_task_id("parents")
    assert (status.state, status.attempts) == (State.SUCCEEDED, 1)


def test_write_interval_zero_writes_each_event_at_once(sql_url, make_tracker):
    tracker = _worker(make_tracker, sql_url, interval=0)
    assert tracker.recorder.writer is None
    publish(tracker, "direct")
    live = tracker.lifecycle.start(event("direct"))
    assert tracker.store.get_by_task_id("direct").state is State.IN_PROGRESS
    tracker.lifecycle.end(live)
    assert tracker.store.get_by_task_id("direct").state is State.SUCCEEDED


def test_closing_the_tracker_writes_the_queue(sql_url, make_tracker):
    tracker = _worker(make_tracker, sql_url)
    publish(tracker, "closing")
    _run(tracker, "closing")
    tracker.close()
    reader = make_tracker(sql_url)
    assert reader.get_by_task_id("closing").state is State.SUCCEEDED


def test_published_events_of_a_batch_keep_their_order():
    from taskstatus.writebehind import (
        BATCHED_RUN,
        BATCHED_START,
        BATCHED_SUCCESS,
        _by_kind,
        _segments,
    )

    def ev(task_id: str) -> TaskEvent:
        return event(task_id)

    now = datetime.now(timezone.utc)
    queued = [
        (BATCHED_START, ev("a"), now),
        (BATCHED_START, ev("b"), now),
        (BATCHED_SUCCESS, ev("a"), now),
        (BATCHED_START, ev("a"), now),  # started again after it ended: a new segment
        (BATCHED_SUCCESS, ev("b"), now),
        (BATCHED_SUCCESS, ev("a"), now),
    ]
    segments = _segments(queued)
    assert [[(k, e.task_id) for k, e, _ in s] for s in segments] == [
        [(BATCHED_START, "a"), (BATCHED_START, "b"), (BATCHED_SUCCESS, "a")],
        [(BATCHED_START, "a"), (BATCHED_SUCCESS, "b"), (BATCHED_SUCCESS, "a")],
    ]
    writes = [
        [(kind, [e.task_id for e in events], len(items)) for kind, events, *_, items in _by_kind(s)]
        for s in segments
    ]
    assert writes == [
        [(BATCHED_START, ["b"], 1), (BATCHED_RUN, ["a"], 2)],
        [(BATCHED_RUN, ["a"], 2), (BATCHED_SUCCESS, ["b"], 1)],
    ]


def test_flush_waits_for_a_write_in_progress(sql_url, make_tracker, monkeypatch):
    import threading

    tracker = _worker(make_tracker, sql_url)
    publish(tracker, "slow")
    _run(tracker, "slow")
    real = tracker.store.end_tasks
    writing = threading.Event()

    def slow(*args, **options):
        writing.set()
        time.sleep(0.3)
        return real(*args, **options)

    monkeypatch.setattr(tracker.store, "end_tasks", slow)
    other = threading.Thread(target=tracker.lifecycle.drain)
    other.start()
    assert writing.wait(5)
    tracker.lifecycle.drain()  # nothing queued, a write in flight: returns once stored
    assert tracker.store.get_by_task_id("slow").state is State.SUCCEEDED
    other.join(5)


def test_flush_of_ended_tasks_leaves_running_starts_queued(any_url, make_tracker):
    tracker = _worker(make_tracker, any_url)
    publish(tracker, "running")
    publish(tracker, "done")
    live = tracker.lifecycle.start(event("running"))
    _run(tracker, "done")
    tracker.lifecycle.drain(ended_only=True)  # what a queue stores before acknowledging "done"
    assert tracker.store.get_by_task_id("done").state is State.SUCCEEDED
    assert tracker.store.get_by_task_id("running").state is State.PENDING
    tracker.lifecycle.end(live)
    tracker.lifecycle.drain()
    status = tracker.store.get_by_task_id("running")
    assert (status.state, status.attempts) == (State.SUCCEEDED, 1)


def test_callbacks_run_once_what_was_queued_before_them_is_stored(sql_url, make_tracker):
    import threading

    tracker = _worker(make_tracker, sql_url)
    publish(tracker, "acked")
    _run(tracker, "acked")
    seen: list[State] = []
    done = threading.Event()

    def acknowledge(items):
        seen.append((items, tracker.store.get_by_task_id("acked").state))
        done.set()

    assert tracker.lifecycle.after_write(acknowledge, "acked")  # at once, not in 5 s
    assert done.wait(3)
    assert seen == [(["acked"], State.SUCCEEDED)]


def test_a_callback_gets_the_items_of_one_write_together_in_order(sql_url, make_tracker):
    import threading

    tracker = _worker(make_tracker, sql_url)
    writer = tracker.recorder.writer
    ids = [f"ack{i}" for i in range(6)]
    for task_id in ids:
        publish(tracker, task_id)
        _run(tracker, task_id)
    calls: list[tuple[str, list[str], set[State]]] = []
    done = threading.Event()

    def acknowledge(items):
        states = {tracker.store.get_by_task_id(t).state for t in items}
        calls.append(("acknowledge", items, states))

    def reject(items):
        calls.append(("reject", items, set()))
        done.set()

    holding, release = threading.Event(), threading.Event()

    def hold(items):
        holding.set()
        release.wait(3)

    writer.after_write(hold, None)
    assert holding.wait(3)  # the thread is busy until all are given: one round takes them
    for task_id in ids[:3]:
        writer.after_write(acknowledge, task_id)
    writer.after_write(reject, "other")
    for task_id in ids[3:]:
        writer.after_write(acknowledge, task_id)
    release.set()
    assert done.wait(3)
    assert calls == [("acknowledge", ids, {State.SUCCEEDED}), ("reject", ["other"], set())]


def test_callbacks_wait_while_the_store_fails(sql_url, make_tracker, monkeypatch):
    import threading

    tracker = _worker(make_tracker, sql_url)
    publish(tracker, "waiting")
    _run(tracker, "waiting")
    real = tracker.store.end_tasks
    failing = threading.Event()
    failing.set()

    def flaky(*args, **options):
        if failing.is_set():
            raise StoreUnavailable("database error: server closed the connection")
        return real(*args, **options)

    monkeypatch.setattr(tracker.store, "end_tasks", flaky)
    done = threading.Event()
    assert tracker.lifecycle.after_write(done.set)  # a callback alone: called without items
    assert not done.wait(0.5)  # not acknowledged while its outcome is not stored
    failing.clear()
    # Retried after the backoff (here the write interval, SLOW), not an interval more.
    assert done.wait(SLOW + 3)
    assert tracker.store.get_by_task_id("waiting").state is State.SUCCEEDED


@pytest.mark.parametrize("chunk", [None, 2])
def test_ending_a_batch_reports_only_what_needs_following_up(
    any_url, make_tracker, monkeypatch, chunk
):
    if chunk:  # several statements per batch on the SQL stores
        monkeypatch.setattr(sql_store, "_IN_CHUNK", chunk)
    tracker = make_tracker(any_url)
    publish(tracker, "box", container="tests.box")
    for task_id in ("plain", "other", "ended", "inside"):
        publish(tracker, task_id, parent="box" if task_id == "inside" else None)
    tracker.lifecycle.end(tracker.lifecycle.start(event("ended")))
    before = tracker.get_by_task_id("ended")
    ids = ["plain", "missing", "inside", "ended", "other", "plain"]
    batch = tracker.store.end_tasks(ids, models.RUN, datetime.now(timezone.utc))
    assert batch.unchanged == ["missing", "ended"]
    box, inside = tracker.get_by_task_id("box"), tracker.get_by_task_id("inside")
    assert [(k.task_id, k.uuid, k.parent_uuid) for k in batch.contained] == [
        ("inside", inside.uuid, box.uuid)
    ]
    for task_id in ("plain", "other", "inside"):
        status = tracker.get_by_task_id(task_id)
        assert (status.state, status.attempts, status.started_at is not None) == (
            State.SUCCEEDED,
            1,
            True,
        )
    assert tracker.get_by_task_id("ended").modified == before.modified  # left as it was


def test_what_a_batch_sets_off_may_read_and_write_through_the_tracker(any_url, make_tracker):
    # A batched success ends a group whose other member was canceled; the group's chain then
    # cancels its waiting step, and a plugin reads the ended statuses, all inside the batch's
    # own write.
    tracker = _worker(make_tracker, any_url)
    seen = []

    class Notify:
        @taskstatus.hookimpl
        def taskstatus_stopped(self, status):
            seen.append((status.task_id, [c.task_id for c in tracker.children(status)]))

    tracker.register(Notify())
    publish(tracker, "chain", container="celery.chain", sequential=True)
    publish(tracker, "group", parent="chain", container="celery.group")
    publish(tracker, "done", parent="group")
    publish(tracker, "dropped", parent="group")
    publish(tracker, "later", parent="chain")
    live = tracker.lifecycle.start(event("done"))
    tracker.cancel(tracker.get_by_task_id("dropped"))
    tracker.lifecycle.end(live)
    tracker.lifecycle.drain()
    assert {t: state(tracker, t) for t in ("chain", "group", "later")} == {
        "chain": "Canceled",
        "group": "Canceled",
        "later": "Canceled",
    }
    assert ("group", ["done", "dropped"]) in seen


class Stopped:
    """A ``taskstatus_stopped`` listener: batches then read back every ended status."""

    @taskstatus.hookimpl
    def taskstatus_stopped(self, status) -> None:
        pass


@pytest.mark.parametrize("listening", [False, True], ids=["quiet", "stopped-listener"])
def test_a_batch_writes_the_times_its_tasks_started_and_ended(sql_url, make_tracker, listening):
    """Written late, in one batch, each task keeps its own start and end (not the batch's)."""
    tracker = _worker(make_tracker, sql_url, interval=1.0)
    if listening:
        tracker.register(Stopped())
    for task_id in ("run", "late", "long", "canceled"):
        publish(tracker, task_id)
    clock = tracker.recorder.clock
    long = tracker.lifecycle.start(event("long"))
    tracker.lifecycle.drain()  # its start alone, written now
    t0 = clock()
    run = tracker.lifecycle.start(event("run"))
    time.sleep(0.2)
    tracker.lifecycle.end(run)
    t1 = clock()
    late = tracker.lifecycle.start(event("late"))
    time.sleep(0.1)
    tracker.lifecycle.end(long)  # a success whose start was written before
    canceled = tracker.lifecycle.start(event("canceled"))
    tracker.lifecycle.end(late)
    t2 = clock()
    tracker.store.transition(tracker.store.get_by_task_id("canceled").uuid, models.CANCEL, t2)
    tracker.lifecycle.end(
        canceled
    )  # left unchanged by the batch: the others are told apart by time
    time.sleep(0.2)
    tracker.lifecycle.drain()  # all of them, written 0.2 s after the last ended
    by_id = {t: tracker.store.get_by_task_id(t) for t in ("run", "late", "long")}
    for task_id, status in by_id.items():
        assert status.state is State.SUCCEEDED, task_id
        assert status.modified == status.finished_at, task_id
    assert t0 <= by_id["run"].started_at < by_id["run"].finished_at <= t1
    assert by_id["run"].finished_at - by_id["run"].started_at >= timedelta(seconds=0.2)
    assert t1 <= by_id["late"].started_at
    assert by_id["late"].finished_at - by_id["late"].started_at >= timedelta(seconds=0.1)
    assert by_id["late"].finished_at <= t2
    assert by_id["long"].started_at < t0 and by_id["long"].finished_at <= t2
    assert tracker.store.get_by_task_id("canceled").state is State.CANCELED
