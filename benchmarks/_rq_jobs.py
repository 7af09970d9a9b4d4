"""The two functions ``benchmarks/rq_overhead.py`` enqueues: identical but for tracking."""

from __future__ import annotations

import taskstatus


def noop(user_id: int, i: int) -> None:
    return None


@taskstatus.track()
def tracked_noop(user_id: int, i: int) -> None:
    return None
