"""Statements that name their rows by key find them through that key's index.

A worker's batch (``task_id IN (...)`` of up to a hundred tasks, plus the states they may be
in) must not walk the ``(state, created)`` index: a planner without fresh statistics would
then read every waiting task for each batch, and a backlog would slow down its own draining.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from taskstatus import models

from .helpers import publish

pytestmark = pytest.mark.timeout(120)

BACKLOG = 300
BATCH = 100


def _plan(engine: sa.Engine, statement: str, parameters: object) -> str:
    """The plan of ``statement`` as text, on the backends whose planner may go wrong."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters).all()
            return "\n".join(str(row[-1]) for row in rows)
        # A small table is cheapest to scan whole; the question is which index is chosen.
        conn.exec_driver_sql("SET enable_seqscan = off")
        rows = conn.exec_driver_sql(f"EXPLAIN {statement}", parameters).all()
        return "\n".join(str(row[0]) for row in rows)


def _statements(engine: sa.Engine, write: Callable[[], object]) -> list[tuple[str, object]]:
    """The statements ``write`` sends, with their parameters."""
    sent: list[tuple[str, object]] = []

    def capture(_conn, _cursor, statement, parameters, _context, _executemany):
        if statement.startswith(("UPDATE", "SELECT")):
            sent.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", capture)
    try:
        write()
    finally:
        sa.event.remove(engine, "before_cursor_execute", capture)
    return sent


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
@pytest.mark.parametrize("write", ["transition_tasks", "end_tasks", "end_tasks, some unchanged"])
def test_a_batch_finds_its_tasks_by_id_whatever_the_backlog(backend, write, make_url, make_tracker):
    tracker = make_tracker(make_url(backend))
    box = publish(tracker, container="tests.box")
    waiting = [
        publish(tracker, parent=box.task_id if i % 2 else None).task_id for i in range(BACKLOG)
    ]
    batch = waiting[:BATCH]
    if write == "end_tasks, some unchanged":
        batch[-1] = "never-published"
    store, now = tracker.store, datetime.now(timezone.utc)
    sent = _statements(
        store.engine,
        lambda: getattr(store, write.split(",")[0])(batch, models.RUN, now),
    )
    assert sent
    for statement, parameters in sent:
        plan = _plan(store.engine, statement, parameters)
        assert "task_id" in plan, plan
        assert "ix_taskstatus_status_state_created" not in plan, plan
        assert "ix_taskstatus_status_parent_uuid" not in plan, plan


def test_the_top_level_list_reads_a_page_of_an_index(make_url, make_tracker):
    """Newest top-level statuses first (the dashboard's list): no sort of every top-level row,
    which SQLite did by the index on ``parent_uuid`` alone (0.1 s at 50,000 rows)."""
    tracker = make_tracker(make_url("sqlite"))
    box = publish(tracker, container="tests.box")
    for i in range(BACKLOG):
        publish(tracker, parent=box.task_id if i % 3 == 0 else None)
    engine = tracker.store.engine
    sent = _statements(engine, lambda: tracker.statuses(parent=None, limit=51))
    (statement, parameters), *_ = [s for s in sent if "FROM taskstatus_status" in s[0]]
    plan = _plan(engine, statement, parameters)
    assert "ix_taskstatus_status_parent_uuid_created" in plan, plan
    assert "TEMP B-TREE" not in plan, plan
