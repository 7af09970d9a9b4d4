"""Prometheus metrics of a real prefork ``celery worker`` (multiprocess mode) after a known mix
of outcomes, scraped from its main process, as docs/observability.md sets it up."""

from __future__ import annotations

from pathlib import Path

import pytest

import taskstatus
from taskstatus import State
from tests.observability.metrics import (
    MIX_STATES,
    counting_here,
    here,
    store_gauges,
    value,
    wait_for_mix,
    worker_env,
)
from tests.ports import free_port
from tests.queue_celery import app as tasks
from tests.waiting import poll, wait_state

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("kind", [("redis", "sqlite"), ("rabbitmq", "mysql")], ids="-".join)
def test_prefork_worker_metrics_after_a_known_mix(make_cell, uid, kind, tmp_path: Path):
    cell = make_cell(*kind)
    port = free_port()
    cell.start_worker(concurrency=2, env=worker_env(port, tmp_path / "prometheus"))
    tracker = taskstatus.get_tracker()
    marker = tmp_path / "running"
    with counting_here(tracker) as published:
        sent = {
            "ok": [tasks.add.delay(1, i, user_id=uid) for i in range(3)],
            "bad": [tasks.explode.delay(uid) for _ in range(2)],
            "flaky": [tasks.flaky.delay(uid, fail_times=1)],
            "slow": [tasks.sleepy.delay(uid, seconds=30, marker=str(marker))],
        }
    poll(marker.exists, bool, "the slow task to start")
    wait_state(sent["slow"][0].id, State.IN_PROGRESS).cancel()
    ends = {"ok": State.SUCCEEDED, "bad": State.FAILED, "flaky": State.SUCCEEDED}
    ends["slow"] = State.CANCELED
    task = {}
    for part, results in sent.items():
        for result in results:
            task[part] = wait_state(result.id, ends[part]).task_class

    wait_for_mix(port, task)
    assert value(here(published), "taskstatus_tasks_published_total") == 7
    assert store_gauges(tracker) == MIX_STATES
