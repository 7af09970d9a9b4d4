"""Prometheus metrics of a real prefork ``celery worker`` (multiprocess mode) after a known mix
of outcomes, scraped from its main process, as docs/observability.md sets it up."""

from __future__ import annotations

from pathlib import Path

import pytest

import taskstatus
from tests.observability.metrics import (
    MIX_STATES,
    counting_here,
    finish_mix,
    here,
    store_gauges,
    value,
    wait_for_mix,
    worker_env,
)
from tests.ports import free_port
from tests.queue_celery import app as tasks

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
            "ok": [tasks.add.delay(1, i, user_id=uid).id for i in range(3)],
            "bad": [tasks.explode.delay(uid).id for _ in range(2)],
            "flaky": [tasks.flaky.delay(uid, fail_times=1).id],
            "slow": [tasks.sleepy.delay(uid, seconds=30, marker=str(marker)).id],
        }
    task = finish_mix(sent, marker)

    wait_for_mix(port, task)
    assert value(here(published), "taskstatus_tasks_published_total") == 7
    assert store_gauges(tracker) == MIX_STATES
