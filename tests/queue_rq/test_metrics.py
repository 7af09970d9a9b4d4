"""Prometheus metrics of a real ``rq worker`` after a known mix of outcomes, scraped from its
main process: the forking worker (multiprocess mode, its work horses sharing one set of files)
and the simple one."""

from __future__ import annotations

from pathlib import Path

import pytest
from rq import Retry

import taskstatus
from taskstatus import State
from tests.observability.metrics import (
    MIX_STATES,
    counting_here,
    free_port,
    here,
    store_gauges,
    value,
    wait_for_mix,
    worker_env,
)
from tests.queue_rq import jobs
from tests.waiting import poll, wait_state

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("worker", ["fork", "simple"])
def test_worker_metrics_after_a_known_mix(rq_cell, uid, worker, tmp_path: Path):
    port = free_port()
    forking = worker == "fork"
    env = worker_env(port, tmp_path / "prometheus" if forking else None)
    tracker = taskstatus.get_tracker()
    marker = tmp_path / "running"
    enqueue = rq_cell.queue.enqueue
    with counting_here(tracker) as published:
        sent = {
            "ok": [enqueue(jobs.add, 1, i, user_id=uid) for i in range(3)],
            "bad": [enqueue(jobs.explode, uid) for _ in range(2)],
            "flaky": [enqueue(jobs.flaky, uid, str(tmp_path / "failed-once"), retry=Retry(1))],
            "slow": [enqueue(jobs.long_running, uid, str(marker), seconds=30)],
        }
    rq_cell.start(f"{worker}+metrics", env=env)
    poll(marker.exists, bool, "the slow job to start")
    wait_state(sent["slow"][0].id, State.IN_PROGRESS).cancel()
    ends = {"ok": State.SUCCEEDED, "bad": State.FAILED, "flaky": State.SUCCEEDED}
    ends["slow"] = State.CANCELED
    task = {}
    for part, enqueued in sent.items():
        for job in enqueued:
            task[part] = wait_state(job.id, ends[part]).task_class

    wait_for_mix(port, task)
    assert value(here(published), "taskstatus_tasks_published_total") == 7
    assert store_gauges(tracker) == MIX_STATES
    if forking:
        # Eight runs, each in a work horse of its own, all counted in one set of files
        # named after the worker: its own, and its horses'.
        files = [p.name for p in (tmp_path / "prometheus").iterdir()]
        owners = {name.removesuffix(".db").rpartition("_")[2] for name in files}
        pid = str(rq_cell.procs[0].pid)
        assert owners == {pid, f"{pid}-child"}, files
