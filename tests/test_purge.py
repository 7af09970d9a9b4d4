"""Retention: purge removes exactly the finished trees created before the cut, a batch at a
time, with their artifacts, histories and files, and leaves a worker writing meanwhile alone."""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from taskstatus import State, StoreError, Tracker
from taskstatus.backends.sqlalchemy import SQLAlchemyStore

from .helpers import event, publish


def stored_files(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if p.is_file()) if root.exists() else []


def finish(tracker: Tracker, task_id: str, *, fail: bool = False) -> None:
    live = tracker.lifecycle.start(event(task_id))
    tracker.lifecycle.end(live, exception=ValueError("bad row") if fail else None)


def finished_tree(tracker: Tracker, name: str, *, running_leaf: bool = False) -> None:
    """A container with a finished child and a nested container of two leaves, a file on
    the first leaf, which fails (and so do the containers above it); the second leaf stays
    running if ``running_leaf``: the tree is then finished at the top, not below."""
    publish(tracker, name, container="taskstatus.group")
    publish(tracker, f"{name}.a", parent=name)
    publish(tracker, f"{name}.sub", parent=name, container="taskstatus.group")
    publish(tracker, f"{name}.sub.x", parent=f"{name}.sub")
    publish(tracker, f"{name}.sub.y", parent=f"{name}.sub")
    finish(tracker, f"{name}.a")
    tracker.get_by_task_id(f"{name}.sub.x").add_artifact(file=b"x", filename=f"{name}.bin")
    finish(tracker, f"{name}.sub.x", fail=True)
    if running_leaf:
        tracker.lifecycle.start(event(f"{name}.sub.y"))
    else:
        finish(tracker, f"{name}.sub.y")


def test_purge_removes_exactly_the_finished_old_trees_across_batches(any_url, make_tracker):
    tracker = make_tracker(any_url, purge_batch_size=3)
    artifacts = Path(tracker.settings.artifact_storage or "")
    # Old: flat tasks and trees interleaved, so that trees fall on both sides of the
    # boundaries of batches of three top-level statuses.
    for i in range(8):
        publish(tracker, f"flat{i}")
        tracker.hook.taskstatus_prerun(event=event(f"flat{i}"))
        tracker.hook.taskstatus_retry(event=event(f"flat{i}", message="again"))
        tracker.get_by_task_id(f"flat{i}").add_artifact(file=b"f", filename=f"flat{i}.bin")
        finish(tracker, f"flat{i}", fail=i % 2 == 1)
        if i % 3 == 0:
            finished_tree(tracker, f"tree{i}")
    finished_tree(tracker, "busy", running_leaf=True)
    publish(tracker, "running")
    tracker.lifecycle.start(event("running"))
    publish(tracker, "waiting")
    time.sleep(0.01)
    cut = datetime.now(timezone.utc)
    time.sleep(0.01)
    publish(tracker, "recent")
    finish(tracker, "recent")
    busy = ["busy", "busy.a", "busy.sub", "busy.sub.x", "busy.sub.y"]
    assert tracker.get_by_task_id("busy").is_terminal
    kept = sorted([*busy, "recent", "running", "waiting"])
    purged_flat = [tracker.get_by_task_id(f"flat{i}") for i in range(8)]
    assert all(len(tracker.attempts(s)) == 1 for s in purged_flat)

    deleted = tracker.purge(older_than=datetime.now(timezone.utc) - cut)

    assert deleted == 8 + 3 * 5  # flat ones, three whole trees of five
    assert sorted(s.task_id for s in tracker.statuses(limit=None)) == kept
    assert stored_files(artifacts) == ["busy.bin"]
    remaining = {s.uuid for s in tracker.statuses(limit=None)}
    assert {a.status_uuid for a in tracker.store.scan_artifacts()} <= remaining
    assert all(tracker.attempts(s) == [] for s in purged_flat)
    # The kept tree is whole and goes once its last task ends.
    finish(tracker, "busy.sub.y")
    assert tracker.get_by_task_id("busy").state is State.FAILED
    assert tracker.purge(older_than=datetime.now(timezone.utc) - cut) == 5
    assert stored_files(artifacts) == []


def test_a_worker_writing_during_a_purge_sees_no_error(sql_url, make_tracker):
    """SQLite has one writer at a time: the purge's batches leave room for the worker."""
    purger = make_tracker(sql_url, purge_batch_size=20)
    for i in range(300):
        publish(purger, f"old{i}")
        finish(purger, f"old{i}")
    time.sleep(0.01)
    cut = datetime.now(timezone.utc)
    worker = make_tracker(sql_url, write_interval=0)
    errors: list[BaseException] = []
    written: list[str] = []
    started = threading.Event()
    done = threading.Event()

    def work() -> None:
        n = 0
        while not done.is_set():
            task_id = f"new{n}"
            n += 1
            try:
                publish(worker, task_id)
                finish(worker, task_id)
            except BaseException as exc:
                errors.append(exc)
                return
            written.append(task_id)
            started.set()

    thread = threading.Thread(target=work)
    thread.start()
    try:
        assert started.wait(30)
        assert purger.purge(older_than=datetime.now(timezone.utc) - cut) == 300
    finally:
        done.set()
        thread.join()
    assert errors == []
    for task_id in written:
        assert worker.get_by_task_id(task_id).state is State.SUCCEEDED


#: A trigger that refuses to delete the status named "poison": a batch that fails mid-purge.
_POISON = {
    "postgresql": [
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF OLD.task_id = 'poison' THEN RAISE EXCEPTION 'poison'; END IF; RETURN OLD; END $$",
        "CREATE TRIGGER refuse_poison BEFORE DELETE ON taskstatus_status "
        "FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
    ],
    "mysql": [
        "CREATE TRIGGER refuse_poison BEFORE DELETE ON taskstatus_status FOR EACH ROW "
        "BEGIN IF OLD.task_id = 'poison' THEN "
        "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'poison'; END IF; END",
    ],
}


@pytest.mark.parametrize("backend", sorted(_POISON))
def test_a_failed_batch_raises_after_the_others_are_committed_and_their_files_gone(
    backend, make_url, make_tracker
):
    """A database server purges on several connections at once: when one batch fails, the
    batches that committed meanwhile still have their files removed, and the error names
    no SQL. Whatever is left in the database keeps its files."""
    tracker = make_tracker(make_url(backend), purge_batch_size=4)
    storage = Path(tracker.settings.artifact_storage or "")
    names = [f"old{i}" for i in range(40)]
    names.insert(21, "poison")
    for name in names:
        publish(tracker, name)
        tracker.get_by_task_id(name).add_artifact(file=b"f", filename=f"{name}.bin")
        finish(tracker, name)
    time.sleep(0.01)
    cut = datetime.now(timezone.utc)
    engine = tracker.store.engine  # type: ignore[attr-defined]
    with engine.begin() as conn:
        for statement in _POISON[backend]:
            conn.exec_driver_sql(statement)

    with pytest.raises(StoreError) as raised:
        tracker.purge(older_than=datetime.now(timezone.utc) - cut)

    assert "DELETE" not in str(raised.value)
    left = sorted(s.task_id for s in tracker.statuses(limit=None))
    assert "poison" in left
    assert len(left) < len(names)  # batches before the poisoned one went
    assert stored_files(storage) == sorted(f"{name}.bin" for name in left)


def test_sqlite_purge_leaves_the_log_checkpointed_and_the_connection_as_it_was(
    make_url, make_tracker, tmp_path
):
    """The purge checkpoints SQLite's log between its batches itself, with the automatic
    checkpoint and the small page cache of its connection back once it is done."""
    tracker = make_tracker(make_url("sqlite"), purge_batch_size=10)
    for i in range(60):
        publish(tracker, f"old{i}")
        finish(tracker, f"old{i}")
    time.sleep(0.01)
    cut = datetime.now(timezone.utc)
    engine = tracker.store.engine  # type: ignore[attr-defined]

    def pragmas() -> tuple[int, int]:
        with engine.connect() as conn:
            return (
                conn.exec_driver_sql("PRAGMA cache_size").scalar(),
                conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar(),
            )

    engine.dispose()  # one pooled connection from here on: the one the purge takes
    before = pragmas()

    assert tracker.purge(older_than=datetime.now(timezone.utc) - cut) == 60

    assert pragmas() == before
    # The database file alone (the log left aside, as the pool still holds it open) already
    # has the purge's deletes: a log this small never reaches the automatic checkpoint.
    copy = tmp_path / "file-only.db"
    shutil.copyfile(engine.url.database, copy)
    with sqlite3.connect(copy) as alone:
        assert alone.execute("SELECT count(*) FROM taskstatus_status").fetchone() == (0,)


@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
def test_a_pool_of_one_connection_purges_too(backend, make_url, make_tracker):
    """The purge's lanes take turns rather than wait forever for connections the pool does
    not have."""
    url = make_url(backend)
    tracker = make_tracker(url)
    for i in range(30):
        publish(tracker, f"old{i}")
        finish(tracker, f"old{i}")
    time.sleep(0.01)
    cut = datetime.now(timezone.utc)
    store = SQLAlchemyStore(url, pool_size=1, max_overflow=0, pool_timeout=5)
    try:
        batches = list(store.purge(cut, batch_size=4))
    finally:
        store.close()
    assert sum(count for count, _ in batches) == 30
    assert tracker.statuses(limit=None) == []
