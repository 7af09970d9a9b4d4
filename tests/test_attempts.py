"""The retry history: each attempt that ended in a retry, on every store."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa

from taskstatus import Attempt, Settings, State, Tracker
from taskstatus.backends.memory import MemoryStore
from taskstatus.store import AttemptStore

from .helpers import event, publish

pytestmark = pytest.mark.timeout(60)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_each_retry_is_recorded_with_its_times_and_message(tracker):
    publish(tracker, "t")
    tracker.hook.taskstatus_prerun(event=event("t", at=at(1)))
    tracker.hook.taskstatus_retry(event=event("t", at=at(2), exception=OSError("timeout")))
    tracker.hook.taskstatus_prerun(event=event("t", at=at(10)))
    tracker.hook.taskstatus_retry(
        event=event("t", at=at(12), message="Rate limited", traceback="Traceback ...")
    )
    tracker.hook.taskstatus_prerun(event=event("t", at=at(20)))
    tracker.hook.taskstatus_succeed(event=event("t", at=at(21)))
    status = tracker.get_by_task_id("t")
    assert tracker.attempts(status) == [
        Attempt(1, at(1), at(2), "OSError: timeout"),
        Attempt(2, at(10), at(12), "Rate limited"),
    ]
    assert (status.state, status.attempts) == (State.SUCCEEDED, 3)
    assert (status.started_at, status.attempt_started_at) == (at(1), at(20))


def test_a_retry_that_does_not_apply_records_nothing(tracker):
    publish(tracker, "t")
    tracker.hook.taskstatus_prerun(event=event("t", at=at(1)))
    tracker.hook.taskstatus_retry(event=event("t", at=at(2), message="first"))
    # A duplicate retry event for the same failure: still Retrying, counted once.
    tracker.hook.taskstatus_retry(event=event("t", at=at(3), message="duplicate"))
    status = tracker.get_by_task_id("t")
    assert [a.message for a in tracker.attempts(status)] == ["first"]
    assert status.attempts == 2


def test_a_retry_before_any_start_has_no_start(tracker):
    status = publish(tracker, "t")
    status.retry()
    assert tracker.attempts(status) == [Attempt(1, None, status.modified, None)]


def test_a_lost_worker_whose_task_is_redelivered_is_an_attempt(tracker):
    """The heartbeat's verdict on a worker that died, as reap_lost reports it."""
    from taskstatus.heartbeat import LOST_MESSAGE

    publish(tracker, "t")
    tracker.hook.taskstatus_prerun(event=event("t", at=at(1)))
    tracker.hook.taskstatus_retry(event=event("t", at=at(60), message=LOST_MESSAGE))
    (attempt,) = tracker.attempts(tracker.get_by_task_id("t"))
    assert attempt == Attempt(1, at(1), at(60), LOST_MESSAGE)


def test_delete_and_purge_remove_the_history(tracker):
    for task_id in ("deleted", "purged"):
        publish(tracker, task_id)
        tracker.hook.taskstatus_prerun(event=event(task_id))
        tracker.hook.taskstatus_retry(event=event(task_id, message="again"))
        tracker.hook.taskstatus_prerun(event=event(task_id))
        tracker.hook.taskstatus_succeed(event=event(task_id))
    deleted, purged = (tracker.get_by_task_id(t) for t in ("deleted", "purged"))
    assert len(tracker.attempts(deleted)) == len(tracker.attempts(purged)) == 1
    tracker.delete(deleted)
    assert tracker.attempts(deleted) == []
    assert tracker.purge(older_than=timedelta(0)) == 1
    assert tracker.attempts(purged) == []


def test_sql_history_rows_go_with_their_status(sql_tracker):
    publish(sql_tracker, "t")
    sql_tracker.hook.taskstatus_retry(event=event("t"))
    sql_tracker.delete(sql_tracker.get_by_task_id("t"))
    with sql_tracker.store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM taskstatus_attempt")).scalar() == 0


def test_a_failed_history_write_undoes_the_retry(sql_tracker):
    """The retry and its record are one transaction: neither is kept without the other."""
    publish(sql_tracker, "t")
    sql_tracker.hook.taskstatus_prerun(event=event("t"))

    def refuse(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO TASKSTATUS_ATTEMPT"):
            raise OSError("disk full")

    engine = sql_tracker.store.engine
    sa.event.listen(engine, "before_cursor_execute", refuse)
    try:
        with pytest.raises(OSError, match="disk full"):
            sql_tracker.hook.taskstatus_retry(event=event("t", message="busy"))
    finally:
        sa.event.remove(engine, "before_cursor_execute", refuse)
    status = sql_tracker.get_by_task_id("t")
    assert (status.state, status.attempts) == (State.IN_PROGRESS, 1)
    assert sql_tracker.attempts(status) == []


class StoreWithoutHistory:
    """A store written before the history existed: the Store protocol and nothing else."""

    def __init__(self) -> None:
        self._inner = MemoryStore("old://")
        self.url = self._inner.url

    def __getattr__(self, name: str) -> Any:
        if name in ("end_attempt", "attempts"):
            raise AttributeError(name)
        return getattr(self._inner, name)


def test_a_store_without_history_still_counts_retries(tmp_path):
    store = StoreWithoutHistory()
    assert not isinstance(store, AttemptStore)
    tracker = Tracker(Settings(url="old://", artifact_storage=str(tmp_path)), store=store)  # type: ignore[arg-type]
    tracker.open()
    try:
        publish(tracker, "t")
        tracker.hook.taskstatus_prerun(event=event("t"))
        tracker.hook.taskstatus_retry(event=event("t", traceback="Traceback: busy"))
        status = tracker.get_by_task_id("t")
        assert (status.state, status.attempts, status.traceback) == (
            State.RETRYING,
            2,
            "Traceback: busy",
        )
        assert tracker.attempts(status) == []
    finally:
        tracker.close()


def test_upgrade_from_0005_keeps_statuses_and_starts_their_history(sql_url):
    from taskstatus.backends import migrate
    from taskstatus.backends.sqlalchemy import SQLAlchemyStore

    store = SQLAlchemyStore(sql_url)
    migrate.upgrade(store.engine, "0005")
    insert = sa.text(
        "INSERT INTO taskstatus_status (uuid, task_id, queue, task_class, name, is_container, "
        "sealed, state, completed_steps, total_steps, planned_steps, attempts, created, "
        "modified, started_at, changed) VALUES (:uuid, :task_id, 'rq', 'x', 'Old', :f, :t, "
        "'In Progress', 0, 1, 1, :attempts, :now, :now, :now, :now)"
    )
    with store.engine.begin() as conn:
        for n, (task_id, attempts) in enumerate((("first", 1), ("third", 3))):
            conn.execute(
                insert,
                {
                    "uuid": f"{n:032x}",
                    "task_id": task_id,
                    "attempts": attempts,
                    "f": False,
                    "t": True,
                    "now": "2026-01-01 00:00:00",
                },
            )
    migrate.upgrade(store.engine)
    store.close()
    tracker = Tracker(Settings(url=sql_url)).open()
    try:
        first, third = (tracker.get_by_task_id(t) for t in ("first", "third"))
        started = datetime(2026, 1, 1, tzinfo=timezone.utc)
        # A status on its first attempt knows when that started; a later one's start is lost.
        assert (first.attempts, first.started_at, first.attempt_started_at) == (1, started, started)
        assert (third.attempts, third.started_at, third.attempt_started_at) == (3, started, None)
        assert tracker.attempts(first) == tracker.attempts(third) == []
        tracker.hook.taskstatus_retry(event=event("first", at=at(0), message="busy"))
        tracker.hook.taskstatus_retry(event=event("third", at=at(0), message="busy"))
        assert tracker.attempts(first) == [Attempt(1, started, at(0), "busy")]
        assert tracker.attempts(third) == [Attempt(3, None, at(0), "busy")]
    finally:
        tracker.close()


def test_attempts_migration_downgrades_and_upgrades(sql_url):
    from alembic import command

    from taskstatus.backends import migrate
    from taskstatus.backends.sqlalchemy import SQLAlchemyStore

    store = SQLAlchemyStore(sql_url)
    migrate.upgrade(store.engine)
    command.downgrade(migrate.alembic_config(store.engine), "0005")
    inspector = sa.inspect(store.engine)
    assert "taskstatus_attempt" not in inspector.get_table_names()
    columns = {c["name"] for c in inspector.get_columns("taskstatus_status")}
    assert "attempt_started_at" not in columns
    migrate.upgrade(store.engine)
    assert migrate.current_revision(store.engine) == migrate.head_revision()
    store.close()


def test_migrations_build_the_schema_the_store_is_written_for(sql_url):
    """The tables of the migrated database are those of backends/tables.py."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from taskstatus.backends import migrate
    from taskstatus.backends.sqlalchemy import SQLAlchemyStore
    from taskstatus.backends.tables import VERSION_TABLE, metadata

    store = SQLAlchemyStore(sql_url)
    migrate.upgrade(store.engine)
    with store.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"version_table": VERSION_TABLE, "compare_type": True}
        )
        assert compare_metadata(context, metadata) == []
    store.close()
