"""The two functions ``benchmarks/rq_overhead.py`` enqueues: identical but for tracking."""

from __future__ import annotations

from _support import install_worker_plugin

import taskstatus

# RQ's worker imports this module to find a job's function, before it forks the work horse.
install_worker_plugin(sequential_children=True)


def noop(user_id: int, i: int) -> None:
    return None


@taskstatus.track()
def tracked_noop(user_id: int, i: int) -> None:
    return None
