"""Statements that name their rows by key find them through that key's index.

A worker's batch (``task_id IN (...)`` of up to a hundred tasks, plus the states they may be
in) must not walk the ``(state, created)`` index: a planner without fresh statistics would
then read every waiting task for each batch, and a backlog would slow down its own draining.
"""

from __future__ import annotations

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


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_batch_finds_its_tasks_by_id_whatever_the_backlog(backend, make_url, make_tracker):
    tracker = make_tracker(make_url(backend))
    waiting = [publish(tracker).task_id for _ in range(BACKLOG)]
    engine = tracker.store.engine
    sent: list[tuple[str, object]] = []

    def capture(_conn, _cursor, statement, parameters, _context, _executemany):
        if statement.startswith("UPDATE"):
            sent.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", capture)
    try:
        changed = tracker.store.transition_tasks(
            waiting[:BATCH], models.RUN, datetime.now(timezone.utc)
        )
    finally:
        sa.event.remove(engine, "before_cursor_execute", capture)
    assert len(changed) == BATCH
    assert len(sent) == 1
    plan = _plan(engine, *sent[0])
    assert "task_id" in plan, plan
    assert "state_created" not in plan, plan
