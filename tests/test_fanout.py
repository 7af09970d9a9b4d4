"""The asyncio followers of a tracker share one reader of the store: each still gets exactly
what its filters let through, joins without a gap, and learns when the store fails."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from taskstatus import Tracker
from taskstatus.changes import Change
from taskstatus.fanout import _HUBS, Subscription
from taskstatus.feed import Update
from tests.helpers import publish

pytestmark = pytest.mark.timeout(90)

FAST = {"poll_interval": 0.05, "min_interval": 0}


class Reads:
    """The store's change reads, noting which ones were filtered (a follower's own)."""

    def __init__(self, tracker: Tracker, monkeypatch: pytest.MonkeyPatch) -> None:
        self.filtered = 0
        self.shared = 0
        self.fail: Exception | None = None
        original = tracker.store.changes

        def changes(*args: Any, **filters: Any) -> Any:
            if self.fail is not None:
                raise self.fail
            if any(v is not None for v in filters.values()):
                self.filtered += 1
            else:
                self.shared += 1
            return original(*args, **filters)

        monkeypatch.setattr(tracker.store, "changes", changes)


class Collected:
    """A follower run as a task, its updates noted as (task id, state, completed steps)."""

    def __init__(self, updates: AsyncIterator[Update]) -> None:
        self.got: list[tuple[str, str, int]] = []
        self._updates = updates
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        async for update in self._updates:
            s = update.status
            self.got.append((s.task_id, s.state.value, s.completed_steps))

    def ids(self) -> set[str]:
        return {task_id for task_id, _, _ in self.got}

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self._updates.aclose()  # type: ignore[attr-defined]


async def until(check: Callable[[], bool], what: str, timeout: float = 20) -> None:
    async def wait() -> None:
        while not check():
            await asyncio.sleep(0.02)

    try:
        await asyncio.wait_for(wait(), timeout)
    except asyncio.TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def test_each_follower_gets_what_its_filters_let_through(
    tracker: Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = publish(tracker, "a")
    b = publish(tracker, "b", user_id="8")
    outer = publish(tracker, "outer", container="taskstatus.group", sealed=False)
    reads = Reads(tracker, monkeypatch)

    since = tracker.change_position()

    async def scenario() -> None:
        everyone = Collected(tracker.follow_async(since, **FAST))
        seven = Collected(tracker.follow_async(since, user_id=7, **FAST))
        eight = Collected(tracker.follow_async(since, user_id=["8"], **FAST))
        tree = Collected(tracker.follow_async(since, root=outer.uuid, **FAST))
        followers = (everyone, seven, eight, tree)
        # Until each has had an update, it may still be reading what it missed on its own.
        await asyncio.to_thread(tracker.start, a)
        await asyncio.to_thread(tracker.start, b)
        await asyncio.to_thread(publish, tracker, "inner", parent="outer", container="x.g")
        await until(lambda: all(f.got for f in followers), "every follower's first update")
        await until(lambda: {"a", "b", "inner"} <= everyone.ids(), "the first writes")
        joined = reads.filtered
        # A grandchild of the followed container, under a child it has seen created.
        leaf = await asyncio.to_thread(publish, tracker, "leaf", parent="inner", total_steps=2)
        await asyncio.to_thread(tracker.start, leaf)
        await asyncio.to_thread(tracker.increment_steps, tracker.get(leaf.uuid), 2, 0)
        await asyncio.to_thread(tracker.succeed, tracker.get(leaf.uuid))
        await asyncio.to_thread(tracker.succeed, tracker.get(b.uuid))
        done = ("leaf", "Succeeded", 2)
        await until(lambda: done in everyone.got and done in tree.got, "the leaf's success")
        await until(lambda: ("b", "Succeeded", 1) in eight.got, "b's success")
        await until(lambda: done in seven.got, "the leaf's success for its owner")
        assert reads.filtered == joined  # once joined, only the shared reader reads
        # The containers start with the leaf.
        assert seven.ids() == {"a", "outer", "inner", "leaf"}
        assert eight.ids() == {"b"}
        assert tree.ids() == {"outer", "inner", "leaf"}
        assert everyone.ids() == {"a", "b", "outer", "inner", "leaf"}
        for follower in followers:
            await follower.close()
        assert not any(key[0] == id(tracker) for key in _HUBS)  # the reader stopped with them

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_followers_joining_while_statuses_change_miss_nothing(tracker: Tracker) -> None:
    """Followers join from one position one after the other while a writer keeps writing:
    each gets every status's last state, and no state twice."""
    statuses = [publish(tracker, f"busy-{i}", total_steps=40) for i in range(4)]
    since = tracker.change_position()
    stop = threading.Event()

    def write() -> None:
        for step in range(40):
            for status in statuses:
                tracker.increment_steps(tracker.get(status.uuid), 1, 0)
            if step % 10 == 9 and stop.wait(0.05):
                return
        for status in statuses:
            tracker.succeed(tracker.get(status.uuid))

    async def scenario() -> None:
        writer = asyncio.ensure_future(asyncio.to_thread(write))
        followers = []
        for _ in range(6):
            followers.append(Collected(tracker.follow_async(since, **FAST)))
            await asyncio.sleep(0.03)
        await writer
        ended = {(s.task_id, "Succeeded", 40) for s in statuses}
        for n, follower in enumerate(followers):
            await until(lambda f=follower: ended <= set(f.got), f"follower {n} to see the end")
            assert len(follower.got) == len(set(follower.got)), follower.got
            await follower.close()

    try:
        asyncio.run(asyncio.wait_for(scenario(), 60))
    finally:
        stop.set()


def test_a_failing_store_reaches_every_follower(
    memory_tracker: Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracker = memory_tracker
    status = publish(tracker, "a")
    reads = Reads(tracker, monkeypatch)

    since = tracker.change_position()

    async def follow_until_error() -> BaseException:
        try:
            async for _ in tracker.follow_async(since, **FAST):
                pass
        except OSError as exc:
            return exc
        raise AssertionError("unreachable")

    async def scenario() -> None:
        first = Collected(tracker.follow_async(since, **FAST))
        failing = [asyncio.ensure_future(follow_until_error()) for _ in range(3)]
        await asyncio.to_thread(tracker.start, status)
        await until(lambda: bool(first.got), "the start")
        reads.fail = OSError("store down")
        errors = await asyncio.wait_for(asyncio.gather(*failing), 20)
        assert [str(e) for e in errors] == ["store down"] * 3
        await first.close()
        # Once the store is back, a new follower gets a reader of its own.
        reads.fail = None
        now = await asyncio.to_thread(tracker.change_position)
        again = Collected(tracker.follow_async(now, **FAST))
        await asyncio.to_thread(tracker.succeed, tracker.get(status.uuid))
        await until(lambda: ("a", "Succeeded", 1) in again.got, "the success")
        await again.close()

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_a_slow_follower_holds_one_change_per_status(memory_tracker: Tracker) -> None:
    """What the shared reader keeps for a follower that does not take it is bounded by the
    statuses that changed, not by the number of writes."""
    a, b = publish(memory_tracker, "a"), publish(memory_tracker, "b")
    at = datetime.now(timezone.utc)
    writes = [
        Change(replace(status, completed_steps=n), row, n, at + timedelta(milliseconds=n))
        for n in range(1, 21)
        for row, status in ((1, a), (2, b))
    ]

    async def offered_one_by_one() -> list[Change]:
        subscription = Subscription(None, None, 1.0)
        for change in writes:
            subscription.offer([change])
        return subscription.take()

    kept = asyncio.run(offered_one_by_one())
    assert [(c.status.task_id, c.version) for c in kept] == [("a", 20), ("b", 20)]
