"""Prometheus metrics of a real ``dramatiq`` worker (two processes, two threads each, in
multiprocess mode) after a known mix of outcomes, scraped from the fork process that serves
them, as docs/observability.md sets it up."""

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
from tests.queue_dramatiq import actors
from tests.waiting import poll, wait_state

pytestmark = pytest.mark.timeout(120)

SERVE = "taskstatus.observability.prometheus:serve_forever"


def test_worker_metrics_after_a_known_mix(make_cell, uid, tmp_path: Path):
    cell = make_cell("redis", "sqlite")
    port = free_port()
    cell.start_worker(worker_env(port, tmp_path / "prometheus"), ["--fork-function", SERVE])
    tracker = taskstatus.get_tracker()
    marker = tmp_path / "running"
    with counting_here(tracker) as published:
        sent = {
            "ok": [actors.add.send(1, i, user_id=uid) for i in range(3)],
            "bad": [actors.explode.send(uid) for _ in range(2)],
            "flaky": [actors.flaky.send(uid, str(tmp_path / "failed-once"))],
            "slow": [actors.long_running.send(uid, str(marker), seconds=30)],
        }
    poll(marker.exists, bool, "the slow task to start")
    wait_state(sent["slow"][0].message_id, State.IN_PROGRESS).cancel()
    ends = {"ok": State.SUCCEEDED, "bad": State.FAILED, "flaky": State.SUCCEEDED}
    ends["slow"] = State.CANCELED
    task = {}
    for part, messages in sent.items():
        for message in messages:
            task[part] = wait_state(message.message_id, ends[part]).task_class

    wait_for_mix(port, task)
    assert value(here(published), "taskstatus_tasks_published_total") == 7
    assert store_gauges(tracker) == MIX_STATES
