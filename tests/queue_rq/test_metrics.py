"""Prometheus metrics of a real ``rq worker`` after a known mix of outcomes, scraped from its
main process: the forking worker (multiprocess mode, its work horses sharing one set of files)
and the simple one."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from rq import Retry

import taskstatus
from taskstatus import State
from taskstatus.observability import prometheus
from tests.observability.metrics import (
    MIX_STATES,
    counting_here,
    counts,
    finish_mix,
    here,
    scrape,
    store_gauges,
    value,
    wait_for_mix,
    worker_env,
)
from tests.ports import free_port
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
            "ok": [enqueue(jobs.add, 1, i, user_id=uid).id for i in range(3)],
            "bad": [enqueue(jobs.explode, uid).id for _ in range(2)],
            "flaky": [enqueue(jobs.flaky, uid, str(tmp_path / "failed-once"), retry=Retry(1)).id],
            "slow": [enqueue(jobs.long_running, uid, str(marker), seconds=30).id],
        }
    rq_cell.start(f"{worker}+metrics", env=env)
    task = finish_mix(sent, marker)

    wait_for_mix(port, task)
    assert value(here(published), "taskstatus_tasks_published_total") == 7
    assert store_gauges(tracker) == MIX_STATES
    if forking:
        # Eight runs, each in a work horse of its own, all counted in one set of files
        # named after the worker: its own, and its horses'.
        files = [p.name for p in (tmp_path / "prometheus").glob("*.db")]
        owners = {name.removesuffix(".db").rpartition("_")[2] for name in files}
        pid = str(rq_cell.procs[0].pid)
        assert owners == {pid, f"{pid}-child"}, files


def test_a_killed_work_horse_counts_as_lost(rq_cell, uid, tmp_path: Path):
    port = free_port()
    marker = tmp_path / "running"
    job = rq_cell.queue.enqueue(jobs.long_running, uid, str(marker), seconds=30)
    worker = rq_cell.start("fork+metrics", env=worker_env(port, tmp_path / "prometheus"))
    poll(marker.exists, bool, "the job to start")
    wait_state(job.id, State.IN_PROGRESS)
    horses = poll(lambda: rq_cell.children(worker), bool, "the work horse")
    assert value(scrape(port), "taskstatus_tasks_in_progress") == 1
    os.kill(horses[0], signal.SIGKILL)
    wait_state(job.id, State.FAILED)
    # The next horse starts afresh: the killed one's task is no longer in progress.
    after = rq_cell.queue.enqueue(jobs.add, 1, 2, user_id=uid)
    wait_state(after.id, State.SUCCEEDED)
    slow, add = "tests.queue_rq.jobs.long_running", "tests.queue_rq.jobs.add"
    expected = {
        "taskstatus_tasks_started_total": {slow: 1, add: 1},
        "taskstatus_tasks_succeeded_total": {add: 1},
        "taskstatus_tasks_failed_total": {slow: 1},
        "taskstatus_tasks_lost_total": {slow: 1},
        "taskstatus_tasks_in_progress": {},
        "taskstatus_task_runtime_seconds_count": {add: 1},  # a killed run never ended
    }
    found = poll(
        lambda: {name: counts(scrape(port), name) for name in expected},
        lambda seen: seen == expected,
        f"the worker's metrics to be {expected}",
    )
    assert found == expected
    failed = counts(scrape(port), "taskstatus_tasks_failed_total", "exception")
    assert failed == {prometheus.LOST_EXCEPTION: 1}
