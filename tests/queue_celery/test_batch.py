"""Publishing many Celery tasks at once: a group (a chord's header, ``chunks``) or a
``taskstatus.batch()`` block records every task with one write, before the first message
leaves; a failure to write sends nothing; containers count their children exactly."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from celery import chord, group
from celery.signals import before_task_publish

import taskstatus
from taskstatus import State, StoreError
from tests.helpers import sql_statements
from tests.queue_celery import app as tasks

from .conftest import TIMEOUT, Cell, settled

pytestmark = pytest.mark.timeout(120)

S = State.SUCCEEDED
MEMBERS = 50


def canvas(kind: str, uid: int, members: int) -> Any:
    """A canvas that sends ``members`` messages of tracked tasks: a group, a chord (its
    header) or chunks (one message per chunk of two items)."""
    if kind == "group":
        return group(tasks.census.s(uid, i) for i in range(members))
    if kind == "chord":
        header = [tasks.census.s(uid, i) for i in range(members)]
        return chord(header, tasks.total.s(user_id=uid))
    return tasks.add.chunks([(i, i, uid) for i in range(2 * members)], 2)


#: What each canvas records besides its members: its containers (and a chord's body).
EXTRA = {"group": 1, "chord": 3, "chunks": 1}


@contextmanager
def recorded_at_first_send(uid: int) -> Iterator[list[int]]:
    """How many statuses the owner had when the first message of the block left."""
    seen: list[int] = []

    def count(**_: Any) -> None:
        if not seen:
            seen.append(len(taskstatus.statuses(user_id=uid, limit=None)))

    before_task_publish.connect(count, weak=False)
    try:
        yield seen
    finally:
        before_task_publish.disconnect(count)


def test_a_group_records_every_member_before_its_first_message(cell: Cell, uid: int) -> None:
    with recorded_at_first_send(uid) as seen:
        result = canvas("group", uid, MEMBERS).apply_async()
    assert seen == [MEMBERS + 1]
    # Each member, on the worker, finds all its siblings recorded.
    assert result.get(timeout=TIMEOUT) == [MEMBERS] * MEMBERS
    root = settled(uid)
    assert (root.task_class, root.state) == ("celery.group", S)
    assert len(root.children()) == MEMBERS
    assert (root.completed_steps, root.total_steps) == (MEMBERS, MEMBERS)


def test_a_chord_records_its_header_and_body_before_its_first_message(
    one_cell: Cell, uid: int
) -> None:
    with recorded_at_first_send(uid) as seen:
        result = canvas("chord", uid, MEMBERS).apply_async()
    assert seen == [MEMBERS + EXTRA["chord"]]
    assert result.get(timeout=TIMEOUT) == MEMBERS * MEMBERS
    root = settled(uid)
    kinds = {child.task_class: child for child in root.children()}
    header, body = kinds["celery.group"], kinds["tests.queue_celery.app.total"]
    assert (root.task_class, root.state, header.state, body.state) == ("celery.chord", S, S, S)
    assert len(header.children()) == MEMBERS
    assert (root.completed_steps, root.total_steps) == (MEMBERS + 1, MEMBERS + 1)


def test_chunks_are_one_tracked_task_each(one_cell: Cell, uid: int) -> None:
    with recorded_at_first_send(uid) as seen:
        result = canvas("chunks", uid, MEMBERS).apply_async()
    assert seen == [MEMBERS + 1]
    assert result.get(timeout=TIMEOUT) == [[4 * i, 4 * i + 2] for i in range(MEMBERS)]
    root = settled(uid)
    chunks = root.children()
    assert (root.task_class, root.state, len(chunks)) == ("celery.group", S, MEMBERS)
    assert {(c.task_class, c.user_id) for c in chunks} == {("tests.queue_celery.app.add", str(uid))}
    assert "Add 0+0 (and 1 more)" in {chunk.name for chunk in chunks}
    assert {(c.state, c.completed_steps, c.total_steps) for c in chunks} == {(S, 2, 2)}
    assert (root.completed_steps, root.total_steps) == (2 * MEMBERS, 2 * MEMBERS)


def test_a_chord_inside_a_group_is_sent_with_the_group(one_cell: Cell, uid: int) -> None:
    header = [tasks.census.s(uid, i) for i in range(5)]
    with recorded_at_first_send(uid) as seen:
        result = group(
            chord(header, tasks.total.s(user_id=uid)), tasks.add.s(1, 2, user_id=uid)
        ).apply_async()
    assert seen == [1 + 3 + 5 + 1]  # the group, the chord's containers and body, the tasks
    assert result.get(timeout=TIMEOUT) == [25, 3]
    root = settled(uid)
    assert (root.task_class, root.state) == ("celery.group", S)
    assert sorted(child.task_class for child in root.children()) == [
        "celery.chord",
        "tests.queue_celery.app.add",
    ]


def test_a_failing_member_fails_its_group_and_the_others_are_counted(
    one_cell: Cell, uid: int
) -> None:
    members = [tasks.add.s(i, i, user_id=uid) for i in range(MEMBERS - 1)]
    group([*members, tasks.explode.si(uid, "row 7")]).apply_async()
    root = settled(uid)
    states = [child.state for child in root.children()]
    assert (root.state, len(states), states.count(S)) == (State.FAILED, MEMBERS, MEMBERS - 1)


def test_delay_in_a_batch_sends_once_every_task_is_recorded(one_cell: Cell, uid: int) -> None:
    idle = one_cell.new_queue()  # nobody consumes it
    with (
        recorded_at_first_send(uid) as seen,
        taskstatus.group("Nightly", user_id=uid) as nightly,
        taskstatus.batch(),
    ):
        results = [tasks.census.delay(uid, i) for i in range(MEMBERS)]
        # A group inside the block is part of it: its messages are held too (its end
        # writes what the block collected so far, to seal the group's container).
        group(tasks.add.s(i, i, user_id=uid) for i in range(10)).apply_async(queue=idle)
        assert one_cell.queue_length(idle) == 0
    assert seen == [1 + MEMBERS + 1 + 10]
    assert one_cell.queue_length(idle) == 10
    assert [r.get(timeout=TIMEOUT) for r in results] == [MEMBERS + 1] * MEMBERS
    done = taskstatus.get(nightly.uuid)
    assert len(done.children()) == MEMBERS + 1


def test_a_retry_leaves_at_once_from_inside_a_batch(one_cell: Cell, uid: int) -> None:
    result = tasks.retry_in_batch.delay(uid)
    assert result.get(timeout=TIMEOUT) == 1
    status = settled(uid)
    assert (status.state, status.attempts) == (S, 2)


@pytest.mark.parametrize("kind", ["group", "chord", "chunks"])
def test_a_store_that_refuses_the_records_sends_nothing(
    make_cell: Callable[[str, str], Cell], uid: int, kind: str
) -> None:
    cell = make_cell("redis", "postgresql")
    engine = taskstatus.get_tracker().store.engine  # type: ignore[attr-defined]
    with engine.begin() as conn:
        conn.execute(
            sa.text("ALTER TABLE taskstatus_status ADD CONSTRAINT refuse CHECK (false) NOT VALID")
        )
    with pytest.raises(StoreError, match=f"cannot record {MEMBERS + EXTRA[kind]} tasks"):
        canvas(kind, uid, MEMBERS).apply_async(queue=cell.queue)
    assert cell.queue_length(cell.queue) == 0


@pytest.mark.parametrize("kind", ["group", "chord", "chunks", "batch"])
def test_many_members_take_chunked_inserts_and_no_read_each(
    make_cell: Callable[[str, str], Cell], uid: int, kind: str
) -> None:
    cell = make_cell("redis", "sqlite")  # no worker
    members = 1200
    engine = taskstatus.get_tracker().store.engine  # type: ignore[attr-defined]
    with sql_statements(engine) as seen:
        if kind == "batch":
            with taskstatus.batch():
                for i in range(members):
                    tasks.add.delay(i, i, user_id=uid)
            rows = members
        else:
            canvas(kind, uid, members).apply_async()
            rows = members + EXTRA[kind]
    assert seen["insert"] == [500] * (rows // 500) + [rows % 500]
    assert len(seen["select"]) <= 3, seen["select"]  # none per member
    assert cell.queue_length(cell.queue) == members
    assert len(taskstatus.statuses(user_id=uid, limit=None)) == rows
