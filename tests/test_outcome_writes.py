"""A failure and its Error artifact, a retry and its traceback: written as one, so another
process never reads the one without the other."""

from __future__ import annotations

import sqlalchemy as sa

from taskstatus import State

from .helpers import event, publish


def _failed_while_inserting(sql_tracker, make_tracker, finish) -> list[State]:
    """What another process reads of task "t" at the moment the writer inserts an artifact."""
    observer = make_tracker(sql_tracker.settings.url)
    seen: list[State] = []

    def before(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith("INSERT INTO TASKSTATUS_ARTIFACT"):
            seen.append(observer.store.get_by_task_id("t").state)

    engine = sql_tracker.store.engine
    sa.event.listen(engine, "before_cursor_execute", before)
    try:
        finish()
    finally:
        sa.event.remove(engine, "before_cursor_execute", before)
    return seen


def test_nobody_reads_a_failure_before_its_error_artifact(sql_tracker, make_tracker):
    publish(sql_tracker, "t")
    live = sql_tracker.lifecycle.start(event("t"))
    seen = _failed_while_inserting(
        sql_tracker,
        make_tracker,
        lambda: sql_tracker.lifecycle.end(live, exception=OSError("disk full")),
    )
    assert seen == [State.IN_PROGRESS]  # the Failed state is committed with the artifact
    status = sql_tracker.get_by_task_id("t")
    assert status.state is State.FAILED
    assert [a.text for a in status.artifacts] == ["OSError: disk full"]
    assert status.traceback and "OSError: disk full" in status.traceback


def test_a_retry_carries_its_traceback_in_its_own_write(tracker):
    publish(tracker, "t")
    live = tracker.lifecycle.start(event("t"))
    tracker.lifecycle.end(
        live, exception=TimeoutError("busy"), retrying=True, traceback="Traceback: busy"
    )
    status = tracker.get_by_task_id("t")
    assert (status.state, status.attempts, status.traceback) == (
        State.RETRYING,
        2,
        "Traceback: busy",
    )


def test_a_transition_that_does_not_apply_writes_nothing_else(tracker):
    publish(tracker, "t")
    live = tracker.lifecycle.start(event("t"))
    tracker.lifecycle.end(live, exception=ValueError("first"))
    tracker.hook.taskstatus_fail(event=event("t", message="again", traceback="late"))
    status = tracker.get_by_task_id("t")
    assert [a.text for a in status.artifacts] == ["ValueError: first"]
    assert "late" not in (status.traceback or "")
