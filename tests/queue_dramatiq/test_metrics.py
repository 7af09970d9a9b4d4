"""Prometheus metrics of a real ``dramatiq`` worker (two processes, two threads each, in
multiprocess mode) after a known mix of outcomes, scraped from the fork process that serves
them, as docs/observability.md sets it up."""

from __future__ import annotations

from pathlib import Path

import pytest

import taskstatus
from tests.observability.metrics import (
    MIX_STATES,
    counting_here,
    finish_mix,
    here,
    scrape,
    store_gauges,
    value,
    wait_for_mix,
    worker_env,
)
from tests.ports import free_port
from tests.queue_dramatiq import actors

pytestmark = pytest.mark.timeout(120)

SERVE = "taskstatus.observability.prometheus:serve_forever"


def run_mix(uid: int, tmp_path: Path) -> dict[str, str]:
    """Send the known mix to the worker of the active cell and wait for each task's end;
    the task class of each part of the mix."""
    marker = tmp_path / "running"
    sent = {
        "ok": [actors.add.send(1, i, user_id=uid).message_id for i in range(3)],
        "bad": [actors.explode.send(uid).message_id for _ in range(2)],
        "flaky": [actors.flaky.send(uid, str(tmp_path / "failed-once")).message_id],
        "slow": [actors.long_running.send(uid, str(marker), seconds=30).message_id],
    }
    return finish_mix(sent, marker)


@pytest.mark.parametrize("kind", [("redis", "sqlite"), ("rabbitmq", "mysql")], ids="-".join)
def test_worker_metrics_after_a_known_mix(make_cell, uid, kind, tmp_path: Path):
    cell = make_cell(*kind)
    port = free_port()
    cell.start_worker(worker_env(port, tmp_path / "prometheus"), ["--fork-function", SERVE])
    tracker = taskstatus.get_tracker()
    with counting_here(tracker) as published:
        task = run_mix(uid, tmp_path)

    wait_for_mix(port, task)
    assert value(here(published), "taskstatus_tasks_published_total") == 7
    assert store_gauges(tracker) == MIX_STATES


def test_beside_dramatiqs_own_prometheus_middleware(make_cell, uid, tmp_path: Path):
    """Dramatiq's middleware points PROMETHEUS_MULTIPROC_DIR at its own directory when a
    worker process boots; given the same directory, both servers show both families."""
    cell = make_cell("redis", "sqlite")
    ours, theirs = free_port(), free_port()
    directory = tmp_path / "prometheus"
    env = worker_env(ours, directory) | {
        "TS_DQ_PROMETHEUS_MIDDLEWARE": "1",
        "dramatiq_prom_db": str(directory),
        "dramatiq_prom_host": "127.0.0.1",
        "dramatiq_prom_port": str(theirs),
    }
    cell.start_worker(env, ["--fork-function", SERVE])
    with counting_here(taskstatus.get_tracker()):  # the publish times, for the queue wait
        task = run_mix(uid, tmp_path)

    wait_for_mix(ours, task)
    samples = wait_for_mix(theirs, task)
    # Eight runs: the flaky task ran twice.
    assert value(samples, "dramatiq_messages_total") == 8
    assert value(scrape(ours), "dramatiq_messages_total") == 8
