"""Publishing many tasks with one write (``taskstatus.batch()``, ``Lifecycle.batch``): every
record is written, in one multi-row INSERT per chunk, before any held message leaves; a
failure to write sends nothing; a failed send ends the tasks it and the later sends carried."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import sqlalchemy as sa

import taskstatus
from taskstatus import State, StoreError, Tracker
from taskstatus.lifecycle import Lifecycle

from .helpers import event, sql_statements

pytestmark = pytest.mark.timeout(120)


class BrokerDown(Exception):
    pass


def send_later(tracker: Tracker, task_id: str, sent: list[str], **fields: object) -> None:
    """What an adapter does for one message: record it, then deliver (or hold) the send."""
    with Lifecycle.sending():
        tracker.lifecycle.publish(event(task_id, **{"user_id": "7", **fields}))
        Lifecycle.deliver(lambda: sent.append(task_id), None)


def test_records_go_in_chunked_multi_row_inserts_before_any_message(sql_tracker: Tracker):
    sent: list[str] = []
    seen_when_sending: list[int] = []

    def first_send() -> None:
        # The first message leaves only once every record of the block is stored.
        seen_when_sending.append(sql_tracker.count(queue="test"))

    with sql_statements(sql_tracker.store.engine) as seen, taskstatus.batch():  # type: ignore[attr-defined]
        with Lifecycle.sending():
            sql_tracker.lifecycle.publish(event("first", user_id="7"))
            Lifecycle.deliver(first_send, None)
        for n in range(1, 1200):
            send_later(sql_tracker, f"task-{n}", sent)
        assert sent == [] and sql_tracker.count(queue="test") == 0  # held, not written
    assert seen_when_sending == [1200]
    assert sent == [f"task-{n}" for n in range(1, 1200)]  # in order
    assert seen["insert"] == [500, 500, 200]  # each chunk one statement
    statuses = sql_tracker.statuses(queue="test", limit=None)
    assert len(statuses) == 1200 and {s.state for s in statuses} == {State.PENDING}


def test_outside_a_batch_each_publish_is_written_and_sent_at_once(memory_tracker: Tracker):
    sent: list[str] = []
    send_later(memory_tracker, "alone", sent)
    assert sent == ["alone"] and memory_tracker.get_by_task_id("alone").state is State.PENDING


def test_a_store_that_refuses_the_records_sends_nothing(
    make_url: Callable[[str], str], make_tracker: Callable[..., Tracker]
):
    tracker = make_tracker(make_url("postgresql"))
    with tracker.store.engine.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(
            sa.text("ALTER TABLE taskstatus_status ADD CONSTRAINT refuse CHECK (false) NOT VALID")
        )
    sent: list[str] = []
    with pytest.raises(StoreError, match="cannot record 50 tasks"), taskstatus.batch():
        for n in range(50):
            send_later(tracker, f"task-{n}", sent)
    assert sent == []


def test_a_failed_send_ends_its_tasks_and_the_later_ones_unsent(any_url, make_tracker):
    tracker = make_tracker(any_url)
    sent: list[str] = []

    def refused() -> None:
        raise BrokerDown("connection refused")

    with pytest.raises(BrokerDown), taskstatus.batch():
        for n in range(3):
            send_later(tracker, f"sent-{n}", sent)
        with Lifecycle.sending():
            tracker.lifecycle.publish(event("refused", user_id="7"))
            Lifecycle.deliver(refused, None)
        send_later(tracker, "never-tried", sent)
    assert sent == ["sent-0", "sent-1", "sent-2"]
    for n in range(3):
        assert tracker.get_by_task_id(f"sent-{n}").state is State.PENDING
    for task_id in ("refused", "never-tried"):
        status = tracker.get_by_task_id(task_id)
        assert status.state is State.FAILED
        assert [a.text for a in status.artifacts] == ["The task could not be sent to the queue."]


def test_a_block_that_raises_records_and_sends_nothing(memory_tracker: Tracker):
    sent: list[str] = []
    with pytest.raises(RuntimeError), taskstatus.batch():
        send_later(memory_tracker, "doomed", sent)
        raise RuntimeError("changed my mind")
    assert sent == [] and memory_tracker.find_by_task_id("doomed") is None


def test_bad_input_raises_at_the_publish_that_gave_it(memory_tracker: Tracker):
    sent: list[str] = []
    with taskstatus.batch():
        send_later(memory_tracker, "fine", sent)
        with pytest.raises(ValueError, match="user_id"):
            send_later(memory_tracker, "bad", sent, user_id="a\x00b")
    assert sent == ["fine"]
    assert memory_tracker.find_by_task_id("bad") is None


def test_a_task_published_again_keeps_its_first_record(sql_tracker: Tracker):
    sent: list[str] = []
    send_later(sql_tracker, "old", sent, name="first")
    first = sql_tracker.get_by_task_id("old")
    with taskstatus.batch():
        send_later(sql_tracker, "new-0", sent)
        send_later(sql_tracker, "old", sent, name="second")
        send_later(sql_tracker, "new-1", sent)
    assert sent == ["old", "new-0", "old", "new-1"]
    again = sql_tracker.get_by_task_id("old")
    assert (again.uuid, again.name) == (first.uuid, "first")
    assert sql_tracker.get_by_task_id("new-1").state is State.PENDING


def test_groups_and_batches_nest_and_count_their_children(any_url, make_tracker):
    tracker = make_tracker(any_url)
    sent: list[str] = []
    with taskstatus.batch(), tracker.group("Inside", user_id=7) as inside:
        for n in range(30):
            send_later(tracker, f"in-{n}", sent)
    with tracker.group("Outside", user_id=7) as outside:
        with taskstatus.batch():
            with taskstatus.batch():  # part of the outer block
                for n in range(20):
                    send_later(tracker, f"out-{n}", sent)
            assert sent[30:] == []
        assert len(sent) == 50
    assert len(tracker.get(inside.uuid).children()) == 30
    assert len(tracker.get(outside.uuid).children()) == 20
    for n in range(30):
        tracker.lifecycle.end(tracker.lifecycle.start(event(f"in-{n}")))
    done = tracker.get(inside.uuid)
    assert (done.state, done.completed_steps, done.total_steps) == (State.SUCCEEDED, 30, 30)


def test_write_collected_writes_the_records_and_keeps_the_sends_held(sql_tracker: Tracker):
    sent: list[str] = []
    engine = sql_tracker.store.engine  # type: ignore[attr-defined]
    with sql_statements(engine) as seen, taskstatus.batch():
        for n in range(3):
            send_later(sql_tracker, f"early-{n}", sent)
        Lifecycle.write_collected()  # what a send the adapter cannot hold comes after
        assert sql_tracker.count(queue="test") == 3 and sent == []
        send_later(sql_tracker, "late", sent)
    assert seen["insert"] == [3, 1]
    assert sent == ["early-0", "early-1", "early-2", "late"]
    with sql_statements(engine) as seen:
        Lifecycle.write_collected()  # outside a block: nothing to write
    assert seen["insert"] == []
