"""The change feed: positions that resume exactly, late commits, filters, coalescing, wake-ups."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskstatus import State, TaskStatus, Tracker
from taskstatus.backends.tables import statuses
from taskstatus.changes import Change, Position
from taskstatus.feed import Follower, Update
from taskstatus.models import START
from tests.helpers import publish

pytestmark = pytest.mark.timeout(60)


def _names(updates: list[Update]) -> list[str]:
    return [u.status.task_id for u in updates]


def test_positions_resume_exactly(tracker: Tracker) -> None:
    a, b, c = (publish(tracker, f"t-{i}") for i in "abc")
    first = tracker.changes()
    assert _names(first) == ["t-a", "t-b", "t-c"]
    # From the middle: only what came after, and each position resumes where it says.
    assert _names(tracker.changes(first[1].position)) == ["t-c"]
    assert tracker.changes(first[2].position) == []
    tracker.start(a)
    tracker.increment_steps(tracker.get(a.uuid), 1, 0)
    again = tracker.changes(first[2].position)
    assert _names(again) == ["t-a"]  # its newest version, once
    assert again[0].status.completed_steps == 1
    assert tracker.changes(again[-1].position) == []
    # A position with nothing delivered in its window yet still skips what came before it.
    assert _names(tracker.changes(first[0].position)) == ["t-b", "t-c", "t-a"]
    assert _names(tracker.changes(limit=2)) == ["t-b", "t-c"]
    del b, c


def test_heartbeats_are_not_changes(tracker: Tracker) -> None:
    status = publish(tracker)
    tracker.start(status)
    end = tracker.changes()[-1].position
    assert tracker.store.beat([status.uuid], datetime.now(timezone.utc)) == 1
    assert tracker.changes(end) == []


def test_a_write_stamped_long_ago_is_still_delivered(tracker: Tracker) -> None:
    """A worker writes its batch of starts late, with the time each start happened: the
    feed orders by the store's write, not by ``modified``."""
    early, later = publish(tracker, "early"), publish(tracker, "later")
    tracker.start(later)
    end = tracker.changes()[-1].position
    long_ago = datetime.now(timezone.utc) - timedelta(hours=1)
    tracker.store.transition_tasks(["early"], START, long_ago)
    late = tracker.changes(end)
    assert _names(late) == ["early"]
    assert late[0].status.state is State.IN_PROGRESS
    assert late[0].status.modified == long_ago
    del early


@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
def test_a_row_committed_late_is_delivered(backend, make_url, make_tracker) -> None:
    """A transaction stamps a row, another commits a newer change that the follower reads,
    then the first commits: the follower still gets it. (SQLite has one writer at a time:
    there the second write waits for the first.)"""
    sql_tracker = make_tracker(make_url(backend))
    slow, fast = publish(sql_tracker, "slow"), publish(sql_tracker, "fast")
    end = sql_tracker.changes()[-1].position
    with sql_tracker.store.engine.connect() as conn:  # type: ignore[attr-defined]
        tx = conn.begin()
        conn.execute(sa.update(statuses).where(statuses.c.uuid == slow.uuid).values(stage="slow"))
        time.sleep(0.05)
        sql_tracker.set_name(fast, "renamed")
        seen = sql_tracker.changes(end)
        assert _names(seen) == ["fast"]
        tx.commit()
    late = sql_tracker.changes(seen[-1].position)
    assert _names(late) == ["slow"]
    assert late[0].status.stage == "slow"
    assert sql_tracker.changes(late[-1].position) == []


def test_owner_and_subtree_filters(tracker: Tracker) -> None:
    outer = publish(tracker, "outer", container="taskstatus.group", sealed=False)
    inner = publish(tracker, "inner", parent="outer", container="taskstatus.group", sealed=False)
    publish(tracker, "leaf", parent="inner")
    publish(tracker, "beside")
    publish(tracker, "theirs", user_id="8")
    assert _names(tracker.changes(root=outer.uuid)) == ["outer", "inner", "leaf"]
    assert _names(tracker.changes(root=str(inner.uuid))) == ["inner", "leaf"]
    assert _names(tracker.changes(user_id=8)) == ["theirs"]
    assert _names(tracker.changes(user_id=["8", "9"])) == ["theirs"]
    assert _names(tracker.changes(user_id=7, root=outer.uuid)) == ["outer", "inner", "leaf"]
    assert tracker.changes(user_id=8, root=outer.uuid) == []
    # A child's change reaches its container's stream.
    end = tracker.changes(root=outer.uuid)[-1].position
    tracker.start(tracker.get_by_task_id("leaf"))
    assert "leaf" in _names(tracker.changes(end, root=outer.uuid))


@pytest.mark.parametrize("bad", ["", "x", "AAAA", "not a position!", "=", "AQ", "Ag", "AYCA"])
def test_a_bad_position_is_a_value_error(tracker: Tracker, bad: str) -> None:
    with pytest.raises(ValueError, match="not a change position"):
        tracker.changes(bad)
    with pytest.raises(ValueError, match="not a change position"):
        tracker.follow(bad)


def test_a_truncated_position_is_a_value_error(memory_tracker: Tracker) -> None:
    for i in range(3):
        publish(memory_tracker, f"t-{i}")
    position = memory_tracker.changes()[-1].position
    for cut in range(1, len(position)):
        try:
            Position.parse(position[:cut])
        except ValueError:
            continue  # a prefix may also be a valid, shorter position; never anything else


@given(
    st.none() | st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)),
    st.dictionaries(
        st.integers(1, 2**63 - 1),
        st.tuples(st.integers(1, 2**40), st.integers(0, 10**7)),
        max_size=20,
    ),
)
def test_positions_round_trip(floor: datetime | None, seen: dict[int, tuple[int, int]]) -> None:
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    base = floor.replace(tzinfo=timezone.utc) if floor else epoch
    position = Position(
        None if floor is None else base,
        {row: (v, base + timedelta(microseconds=us)) for row, (v, us) in seen.items()},
    )
    text = str(position)
    assert text.replace("-", "").replace("_", "").isalnum()
    back = Position.parse(text)
    assert (back.floor, back.seen) == (position.floor, position.seen)


def _follow_in_thread(tracker: Tracker, **options: object) -> tuple[list[Update], threading.Event]:
    """Updates of a follower running in a thread, until a terminal state or the test's end."""
    got: list[Update] = []
    done = threading.Event()
    start = tracker.changes()
    position = start[-1].position if start else None

    def run() -> None:
        for update in tracker.follow(position, **options):  # type: ignore[arg-type]
            got.append(update)
            if update.status.state.is_terminal or done.is_set():
                break
        done.set()

    threading.Thread(target=run, daemon=True).start()
    return got, done


def _wait(condition: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_the_terminal_state_is_never_coalesced_away(tracker: Tracker) -> None:
    status = publish(tracker, total_steps=100)
    got, done = _follow_in_thread(tracker, poll_interval=0.05, min_interval=60.0)
    tracker.start(status)
    _wait(lambda: got)  # the start went out; the next change of this status is held 60 s
    for _ in range(20):
        tracker.increment_steps(tracker.get(status.uuid), 1, 0)
    tracker.succeed(tracker.get(status.uuid))
    _wait(done.is_set)
    states = [u.status.state for u in got]
    assert states == [State.IN_PROGRESS, State.SUCCEEDED]
    assert got[-1].status.completed_steps == 100
    # Resuming from the last position finds nothing; from the first, only the terminal state.
    assert tracker.changes(got[-1].position) == []
    assert [u.status.state for u in tracker.changes(got[0].position)] == [State.SUCCEEDED]


def test_a_fast_ticking_status_is_coalesced(tracker: Tracker) -> None:
    status = publish(tracker, total_steps=1000)
    tracker.start(status)
    got, done = _follow_in_thread(tracker, poll_interval=0.02, min_interval=0.3)
    began = time.monotonic()
    while time.monotonic() - began < 1.5:
        tracker.increment_steps(tracker.get(status.uuid), 1, 0)
        time.sleep(0.005)
    tracker.succeed(tracker.get(status.uuid))
    _wait(done.is_set)
    elapsed = time.monotonic() - began
    progress = [u.status.completed_steps for u in got]
    assert progress == sorted(progress)
    assert len(got) <= elapsed / 0.3 + 2, progress
    assert len(got) >= 3
    assert got[-1].status.state is State.SUCCEEDED


def test_a_held_change_is_covered_by_later_positions(tracker: Tracker) -> None:
    """While one status's change is held back, the positions given with others' changes do
    not pass it: a client resuming from them receives it."""
    a = publish(tracker, "a")
    follower = Follower(Position(), min_interval=10.0)
    follower.take(tracker.store.changes(Position(), 10))
    assert [follower.give(c) for c in follower.due(now=0.0)]
    tracker.start(a)  # "a" went out at 0.0: this change is held until 10.0
    publish(tracker, "b")
    follower.take(tracker.store.changes(follower.read, 10))
    due = follower.due(now=1.0)
    assert [c.status.task_id for c in due] == ["b"]
    position = follower.give(due[0])
    resumed = tracker.changes(position)
    assert [(u.status.task_id, u.status.state) for u in resumed] == [("a", State.IN_PROGRESS)]
    assert [c.status.task_id for c in follower.due(now=10.0)] == ["a"]


def test_follow_async(tracker: Tracker) -> None:
    status = publish(tracker)
    start = tracker.changes()[-1].position

    async def first_two() -> list[Update]:
        got = []
        async for update in tracker.follow_async(start, poll_interval=0.05, min_interval=0):
            got.append(update)
            if len(got) == 1:
                await asyncio.to_thread(tracker.succeed, status)
            if update.status.state.is_terminal:
                return got
        raise AssertionError("unreachable")

    tracker.start(status)
    got = asyncio.run(asyncio.wait_for(first_two(), 20))
    assert [u.status.state for u in got] == [State.IN_PROGRESS, State.SUCCEEDED]


def test_from_now_on(tracker: Tracker) -> None:
    publish(tracker, "before")
    updates = tracker.follow(poll_interval=0.05)
    publish(tracker, "after")
    first = next(updates)
    # "before" was written before the follower began: it is not shown again.
    assert first.status.task_id == "after"
    updates.close()


@pytest.mark.parametrize("backend", ["postgresql"])
def test_postgresql_wakes_followers_at_once(backend, make_url, make_tracker) -> None:
    tracker = make_tracker(make_url(backend))
    status = publish(tracker)
    got, done = _follow_in_thread(tracker, poll_interval=30.0, min_interval=0)
    time.sleep(0.5)  # the follower is waiting
    latencies = []
    for action in (tracker.start, tracker.succeed):
        before = len(got)
        written = time.monotonic()
        action(tracker.get(status.uuid))
        _wait(lambda: len(got) > before, timeout=10)  # noqa: B023
        latencies.append(time.monotonic() - written)
    assert max(latencies) < 1.0, latencies  # far below the 30 s poll interval
    assert done.wait(5)


def test_changes_of_a_deleted_status_are_gone(tracker: Tracker) -> None:
    status = publish(tracker)
    tracker.delete(status)
    assert tracker.changes() == []


def test_change_records(tracker: Tracker) -> None:
    publish(tracker)
    change = tracker.store.changes(Position(), 10)[0]
    assert isinstance(change, Change)
    assert change.version == 1
    assert change.changed.tzinfo is not None


def test_from_now_on_in_a_filtered_stream(tracker: Tracker) -> None:
    """ "Now" for one owner's stream carries nothing of the others' recent changes."""
    for i in range(20):
        publish(tracker, f"theirs-{i}", user_id="8")
    mine = publish(tracker, "mine")
    position = tracker.change_position(user_id=7)
    assert set(Position.parse(position).seen) == {tracker.store.changes(Position(), 100)[-1].row}
    tracker.start(mine)
    assert _names(tracker.changes(position, user_id=7)) == ["mine"]
    assert tracker.changes(tracker.change_position(root=mine.uuid), root=mine.uuid) == []


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(st.sampled_from(["publish", "step", "end", "read"]), st.integers(0, 4)),
        max_size=40,
    )
)
def test_reads_between_writes_miss_nothing_and_repeat_nothing(
    tracker: Tracker, steps: list[tuple[str, int]]
) -> None:
    """Whatever the writes between them and the page sizes, reading on from each position
    delivers every status's last version once, and a status again only when it changed."""
    for status in tracker.statuses(limit=None):
        tracker.delete(status)
    position = tracker.change_position()
    mine: list[TaskStatus] = []
    delivered: list[tuple[str, int]] = []  # (task id, completed steps or -1 when ended)

    def read(limit: int) -> None:
        nonlocal position
        for update in tracker.changes(position, limit=limit):
            s = update.status
            delivered.append((s.task_id, -1 if s.state.is_terminal else s.completed_steps))
            position = update.position

    for action, n in steps:
        if action == "publish":
            mine.append(publish(tracker, total_steps=100))
            tracker.start(mine[-1])
        elif action in ("step", "end") and mine:
            status = tracker.get(mine[n % len(mine)].uuid)
            if action == "step":
                tracker.increment_steps(status, 1, 0)
            else:
                tracker.succeed(status)
        elif action == "read":
            read(n + 1)
    read(1000)
    assert len(delivered) == len(set(delivered))  # nothing twice: each is a newer version
    last = dict(delivered)
    for status in mine:
        now = tracker.get(status.uuid)
        assert last[status.task_id] == (-1 if now.state.is_terminal else now.completed_steps)


def test_postgresql_listener_reconnects(make_url, make_tracker, caplog) -> None:
    """A listening connection that the server drops is replaced: wake-ups go on."""
    tracker = make_tracker(make_url("postgresql"))
    store = tracker.store
    status = publish(tracker)
    got, done = _follow_in_thread(tracker, poll_interval=30.0, min_interval=0)
    _wait(lambda: store._listener is not None and store._listener.backend_pid)
    first = store._listener.backend_pid
    with store.engine.connect() as conn:
        conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
    _wait(lambda: store._listener.backend_pid not in (None, first))
    written = time.monotonic()
    tracker.start(status)
    _wait(lambda: got, timeout=10)
    assert time.monotonic() - written < 2.0  # woken, not the 30 s poll
    tracker.succeed(tracker.get(status.uuid))
    assert done.wait(10)
    assert "cannot listen for changes" in caplog.text
