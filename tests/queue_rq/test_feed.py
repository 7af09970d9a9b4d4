"""The change feed follows what a real ``rq worker`` process writes."""

from __future__ import annotations

import asyncio

import pytest

import taskstatus
from taskstatus import State
from taskstatus.feed import Update
from tests.queue_rq import jobs
from tests.waiting import TIMEOUT

pytestmark = pytest.mark.timeout(120)


def test_a_follower_sees_progress_rise_then_the_end(rq_cell, uid):
    tracker = taskstatus.get_tracker()

    start = tracker.change_position(user_id=uid)
    rq_cell.start()
    rq_cell.queue.enqueue(jobs.count, uid, 8, 0.25)

    async def follow() -> list[Update]:
        got: list[Update] = []
        updates = tracker.follow_async(start, user_id=uid, poll_interval=0.2, min_interval=0.1)
        async for update in updates:
            got.append(update)
            if update.status.state.is_terminal:
                return got
        raise AssertionError("the feed ended")

    got = asyncio.run(asyncio.wait_for(follow(), TIMEOUT))
    progress = [u.status.completed_steps for u in got if u.status.state is State.IN_PROGRESS]
    assert got[0].status.state in (State.PENDING, State.IN_PROGRESS)
    assert len(set(progress)) >= 2, [(u.status.state, u.status.completed_steps) for u in got]
    assert progress == sorted(progress)
    assert (got[-1].status.state, got[-1].status.completed_steps) == (State.SUCCEEDED, 8)
    # Each update's position resumes after it: from the one before the end, only the end.
    rest = tracker.changes(got[-2].position, user_id=uid)
    assert [u.status.state for u in rest] == [State.SUCCEEDED]
