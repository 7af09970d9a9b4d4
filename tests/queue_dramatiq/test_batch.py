"""Publishing many Dramatiq messages with one write: ``group.run()``, ``pipeline.run()`` and
``send()`` inside ``taskstatus.batch()`` record every status, in one multi-row INSERT, before
the first message leaves; a store that refuses the records leaves the broker untouched."""

from __future__ import annotations

from collections.abc import Callable

import dramatiq
import pytest
import redis
import sqlalchemy as sa

import taskstatus
from taskstatus import State, StoreError
from tests.helpers import sql_statements
from tests.queue_dramatiq import actors
from tests.queue_dramatiq.conftest import Cell
from tests.waiting import poll, settled

pytestmark = pytest.mark.timeout(180)

#: Members per publish on the real workers.
MEMBERS = 12


def census(uid: int, fail: bool = False) -> dramatiq.Message[object]:
    # A pipeline would pass each step the previous one's result: they ignore it.
    return actors.census.message_with_options(args=(uid, fail), pipe_ignore=True)


def seen(status: taskstatus.TaskStatus) -> int:
    """How many statuses of its owner the census that ``status`` tracks found as it ran."""
    (text,) = [a.text for a in status.artifacts if a.name == "seen"]
    assert text is not None
    return int(text)


def test_a_group_is_recorded_before_its_first_message_runs(cell: Cell, uid: int):
    dramatiq.group(census(uid) for _ in range(MEMBERS)).run()
    root = settled(uid)
    assert (root.task_class, root.state) == ("dramatiq.group", State.SUCCEEDED)
    children = root.children()
    assert len(children) == MEMBERS
    assert (root.completed_steps, root.total_steps) == (MEMBERS, MEMBERS)
    # The first member to run found the group and every sibling recorded already.
    assert [seen(child) for child in children] == [MEMBERS + 1] * MEMBERS


def test_a_pipeline_is_recorded_before_its_first_step_runs(cell: Cell, uid: int):
    dramatiq.pipeline(census(uid) for _ in range(MEMBERS)).run()
    root = settled(uid)
    assert (root.task_class, root.state) == ("dramatiq.pipeline", State.SUCCEEDED)
    steps = root.children()
    assert len(steps) == MEMBERS and {s.state for s in steps} == {State.SUCCEEDED}
    assert [seen(step) for step in steps] == [MEMBERS + 1] * MEMBERS


def test_sends_in_a_batch_are_recorded_before_the_first_leaves(cell: Cell, uid: int):
    with taskstatus.batch():
        messages = [actors.census.send(uid) for _ in range(MEMBERS)]
        assert taskstatus.get_tracker().count(user_id=uid) == 0  # collected, not written
    ids = [m.message_id for m in messages]
    poll(
        lambda: [taskstatus.get_by_task_id(i) for i in ids],
        lambda found: all(s.state is State.SUCCEEDED for s in found),
        "every message of the batch to succeed",
    )
    assert [seen(taskstatus.get_by_task_id(i)) for i in ids] == [MEMBERS] * MEMBERS


def test_a_failing_member_fails_its_group(cell: Cell, uid: int):
    dramatiq.group(census(uid, fail=n == 0) for n in range(MEMBERS)).run()
    root = settled(uid)
    assert (root.task_class, root.state) == ("dramatiq.group", State.FAILED)
    states = sorted(child.state.value for child in root.children())
    assert states == sorted([State.FAILED.value] + [State.SUCCEEDED.value] * (MEMBERS - 1))


# -- a store that refuses the records ------------------------------------------------------------
@pytest.fixture
def refusing(make_cell: Callable[[str, str], Cell]) -> Cell:
    """A Redis broker (no worker) and a PostgreSQL store whose table refuses every insert."""
    cell = make_cell("redis", "postgresql")
    engine = taskstatus.get_tracker().store.engine  # type: ignore[attr-defined]
    with engine.begin() as conn:
        conn.execute(
            sa.text("ALTER TABLE taskstatus_status ADD CONSTRAINT refuse CHECK (false) NOT VALID")
        )
    return cell


def sent_messages(cell: Cell) -> int:
    """Messages in the cell's queue on Redis (each by its id)."""
    client = redis.Redis.from_url(cell.broker_url)
    return int(client.hlen(f"dramatiq:{cell.queue}.msgs"))


def send_loop(uid: int) -> None:
    with taskstatus.batch():
        for _ in range(MEMBERS):
            actors.census.send(uid)


@pytest.mark.parametrize(
    "publish",
    [
        lambda uid: dramatiq.group(census(uid) for _ in range(MEMBERS)).run(),
        lambda uid: dramatiq.pipeline(census(uid) for _ in range(MEMBERS)).run(),
        send_loop,
    ],
    ids=["group", "pipeline", "batch-of-sends"],
)
def test_a_store_that_refuses_the_records_sends_nothing(
    refusing: Cell, uid: int, publish: Callable[[int], None]
):
    with pytest.raises(StoreError, match=r"cannot record \d+ tasks"):
        publish(uid)
    assert sent_messages(refusing) == 0
    assert taskstatus.statuses(user_id=uid, limit=None) == []


# -- statements ---------------------------------------------------------------------------------


def send_many(uid: int, n: int) -> None:
    with taskstatus.batch():
        for _ in range(n):
            actors.census.send(uid)


@pytest.mark.parametrize(
    ("publish", "size", "inserts", "messages"),
    [
        (
            lambda uid, n: dramatiq.group(census(uid) for _ in range(n)).run(),
            1200,
            [500, 500, 201],
            1200,
        ),
        # Dramatiq nests a pipeline's steps in its first message: a few hundred at most.
        (lambda uid, n: dramatiq.pipeline(census(uid) for _ in range(n)).run(), 200, [201], 1),
        (send_many, 1200, [500, 500, 200], 1200),
    ],
    ids=["group", "pipeline", "batch-of-sends"],
)
def test_many_members_cost_one_chunked_insert_and_no_select_each(
    make_cell: Callable[[str, str], Cell],
    uid: int,
    publish: Callable[[int, int], object],
    size: int,
    inserts: list[int],
    messages: int,
):
    """``inserts``: the row counts of the INSERTs of ``size`` members (and their container);
    ``messages``: how many messages leave."""
    cell = make_cell("redis", "sqlite")  # no worker: only the publish writes
    engine = taskstatus.get_tracker().store.engine  # type: ignore[attr-defined]
    publish(uid, 2)  # the store's first statements (schema checks) come before
    with sql_statements(engine) as few:
        publish(uid, 10)
    assert sent_messages(cell) > 0
    cell.broker.flush(cell.queue)
    with sql_statements(engine) as many:
        publish(uid, size)
    assert many["insert"] == inserts
    assert len(many["select"]) == len(few["select"])  # none per member
    assert sent_messages(cell) == messages
