"""Concurrent writers in several processes: no lost updates, no connection shared across fork."""

from __future__ import annotations

import multiprocessing
import threading
from dataclasses import replace

import pytest

from taskstatus import State

from .helpers import event, publish

pytestmark = pytest.mark.timeout(120)

WORKERS = 4
TICKS = 300


def _work(tracker, task_id: str, shared_id: str, ticks: int, barrier) -> None:
    """Runs in a forked child, using the tracker (and pool) the parent already used."""
    barrier.wait(timeout=30)
    live = tracker.lifecycle.start(event(task_id))
    for _ in range(ticks):
        live.increment_completed_steps()
        # Write every tick: the worst case for lost updates.
        live.flush(final=False, force=True)
        tracker.increment_steps(tracker.get_by_task_id(shared_id), 1, 0)
    tracker.lifecycle.end(live)


@pytest.mark.parametrize("backend", ["postgresql", "mysql", "sqlite"])
def test_processes_incrementing_one_container(backend, make_url, make_tracker):
    tracker = make_tracker(make_url(backend))
    publish(tracker, "box", container="taskstatus.group")
    for i in range(WORKERS):
        publish(tracker, f"w{i}", parent="box", total_steps=TICKS)
    publish(tracker, "shared", total_steps=WORKERS * TICKS)
    tracker.lifecycle.start(event("shared"))

    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(WORKERS)
    procs = [
        ctx.Process(target=_work, args=(tracker, f"w{i}", "shared", TICKS, barrier))
        for i in range(WORKERS)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=90)
    assert [p.exitcode for p in procs] == [0] * WORKERS

    box = tracker.get_by_task_id("box")
    assert box.state is State.SUCCEEDED
    assert (box.completed_steps, box.total_steps) == (WORKERS * TICKS, WORKERS * TICKS)
    # Every increment of the shared status landed: atomic SQL increments, no lost update.
    assert tracker.get_by_task_id("shared").completed_steps == WORKERS * TICKS


def test_racing_terminal_events_fire_stopped_once(sql_tracker):
    """Many threads race to end the same statuses: exactly one transition wins each."""
    import taskstatus

    calls: list[str] = []

    class Count:
        @taskstatus.hookimpl
        def taskstatus_stopped(self, status):
            calls.append(status.task_id)

    sql_tracker.register(Count())
    ids = [f"r{i}" for i in range(10)]
    for task_id in ids:
        publish(sql_tracker, task_id)
        sql_tracker.lifecycle.start(event(task_id))

    def end(hook: str) -> None:
        for task_id in ids:
            getattr(sql_tracker.hook, hook)(event=event(task_id))

    threads = [
        threading.Thread(target=end, args=(h,))
        for h in ("taskstatus_succeed", "taskstatus_fail", "taskstatus_cancel") * 2
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(calls) == sorted(ids)
    for task_id in ids:
        s = sql_tracker.get_by_task_id(task_id)
        assert s.is_terminal
        assert len([a for a in s.artifacts if a.name == "Error"]) == (s.state is State.FAILED)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mysql"])
def test_threads_sharing_one_tracker(backend, make_url, make_tracker):
    """Worker threads share a tracker: no result read on another thread's connection, no
    'database is locked' from SQLite under concurrent writers."""
    tracker = make_tracker(make_url(backend))
    errors: list[BaseException] = []

    def work(n: int) -> None:
        for i in range(40):
            task_id = f"th{n}-{i}"
            try:
                publish(tracker, task_id)
                live = tracker.lifecycle.start(event(task_id))
                live.set_state("working")
                live.flush(final=False)
                tracker.lifecycle.end(live, exception=ValueError("x") if i % 3 == 0 else None)
                assert tracker.get_by_task_id(task_id).is_terminal
            except BaseException as exc:  # collected and reported below
                errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    assert errors == []
    assert tracker.count(state=State.FAILED) == 6 * 14
    assert tracker.count(state=State.SUCCEEDED) == 6 * 26


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mysql"])
def test_update_primitive_loses_no_update(backend, make_url, make_tracker):
    """The SQL store's ``update``, which the base class's methods build on, reads and writes
    each status under a lock: every read-modify-write of racing threads lands, and only the
    ones shown to followers count as new versions."""
    tracker = make_tracker(make_url(backend))
    store = tracker.store
    uuid = publish(tracker, "shared").uuid
    rounds = 40
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def work(shown: bool) -> None:
        def bump(s):
            if shown:
                return replace(s, completed_steps=s.completed_steps + 1)
            return replace(s, total_steps=s.total_steps + 1)

        try:
            barrier.wait(timeout=30)
            for _ in range(rounds):
                store.update(uuid, bump, shown=shown)
        except BaseException as exc:  # collected and reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n % 2 == 0,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    assert errors == []
    [row] = [c for c in store.scan() if c.status.uuid == uuid]
    assert (row.status.completed_steps, row.status.total_steps) == (2 * rounds, 1 + 2 * rounds)
    assert row.version == 1 + 2 * rounds


def _write_a_little(tracker, task_id: str) -> None:
    live = tracker.lifecycle.start(event(task_id))
    live.increment_completed_steps()
    live.flush(final=False, force=True)
    tracker.lifecycle.end(live)


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_fork_while_the_heartbeat_writes(backend, make_url, make_tracker):
    """A fork never catches the heartbeat thread mid-statement: children start on a clean store."""
    tracker = make_tracker(make_url(backend), heartbeat_interval=0.002, lost_after=60)
    publish(tracker, "parent-task")
    tracker.lifecycle.start(
        event("parent-task")
    )  # the parent now runs a heartbeat thread, beating often
    ctx = multiprocessing.get_context("fork")
    for round_ in range(10):
        ids = [f"c{round_}-{i}" for i in range(3)]
        for task_id in ids:
            publish(tracker, task_id)
        procs = [ctx.Process(target=_write_a_little, args=(tracker, task_id)) for task_id in ids]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=60)
        assert [p.exitcode for p in procs] == [0] * len(ids)
        assert {tracker.get_by_task_id(t).state for t in ids} == {State.SUCCEEDED}


def test_prepare_for_fork_changes_nothing(any_url, make_tracker):
    tracker = make_tracker(any_url)
    publish(tracker, "untouched")
    before = tracker.get_by_task_id("untouched")
    tracker.lifecycle.prepare_for_fork()
    assert tracker.statuses(limit=None) == [before]
    assert tracker.get_by_task_id("untouched").modified == before.modified
