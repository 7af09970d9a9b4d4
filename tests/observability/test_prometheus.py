"""The Prometheus plugin driven through the lifecycle API in this process, the store-wide
gauges of ``taskstatus serve``, and what a user gets wrong (a missing extra, bad arguments).
Real workers of each queue: tests/queue_*/test_metrics.py."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from starlette.testclient import TestClient

from taskstatus import State, TaskCanceledException, messages
from taskstatus.observability import prometheus
from taskstatus.web.serve import serve_app
from tests.cli_process import taskstatus_process
from tests.helpers import event, publish, sql_statements
from tests.observability.metrics import parse, scrape, value
from tests.ports import free_port
from tests.waiting import TIMEOUT, poll

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def registry():
    return CollectorRegistry()


@pytest.fixture
def metrics(memory_tracker, registry):
    return prometheus.install(registry, tracker=memory_tracker)


def samples(registry):
    return parse(generate_latest(registry).decode())


def test_counts_each_outcome_by_queue_and_task(memory_tracker, metrics, registry):
    lifecycle = memory_tracker.lifecycle
    for task_id in ("ok", "bad", "again", "stop", "lost", "lost-again"):
        publish(memory_tracker, task_id)
    lifecycle.end(lifecycle.start(event("ok")))
    lifecycle.end(lifecycle.start(event("bad")), exception=ValueError("no header"))
    lifecycle.end(lifecycle.start(event("again")), exception=OSError("busy"), retrying=True)
    lifecycle.end(lifecycle.start(event("stop")), exception=TaskCanceledException("stop"))
    lifecycle.start(event("lost"))
    # As the reaper reports a task whose worker stopped stamping it: no exception.
    memory_tracker.hook.taskstatus_fail(event=event("lost", message=messages.WORKER_LOST))
    lifecycle.start(event("lost-again"))
    lost = RuntimeError(messages.WORKER_LOST)
    lifecycle.end(event("lost-again"), exception=lost, retrying=True)

    found = samples(registry)
    labels = {"queue": "test", "task": "tests.task"}
    assert value(found, "taskstatus_tasks_published_total", **labels) == 6
    assert value(found, "taskstatus_tasks_started_total", **labels) == 6
    assert value(found, "taskstatus_tasks_succeeded_total", **labels) == 1
    assert value(found, "taskstatus_tasks_failed_total", exception="ValueError", **labels) == 1
    assert value(found, "taskstatus_tasks_failed_total", exception="WorkerLost", **labels) == 1
    assert value(found, "taskstatus_tasks_failed_total", **labels) == 2
    assert value(found, "taskstatus_tasks_retried_total", **labels) == 2
    assert value(found, "taskstatus_tasks_canceled_total", **labels) == 1
    assert value(found, "taskstatus_tasks_lost_total", **labels) == 2


def test_a_failure_without_an_exception_has_a_fixed_label(memory_tracker, metrics, registry):
    publish(memory_tracker, "quiet")
    memory_tracker.hook.taskstatus_fail(event=event("quiet", message="gave up"))
    found = samples(registry)
    assert value(found, "taskstatus_tasks_failed_total", exception="none") == 1
    assert value(found, "taskstatus_tasks_lost_total") == 0


def test_a_cancel_request_is_not_a_canceled_run(memory_tracker, metrics, registry):
    """A cancel from the API is a request; the run counts when it stops (or is skipped)."""
    publish(memory_tracker, "early")
    memory_tracker.cancel(memory_tracker.get_by_task_id("early"))
    assert value(samples(registry), "taskstatus_tasks_canceled_total") == 0
    with pytest.raises(TaskCanceledException):
        memory_tracker.lifecycle.start(event("early"))
    canceled = TaskCanceledException("canceled before it started")
    memory_tracker.lifecycle.end(event("early"), exception=canceled)
    found = samples(registry)
    assert value(found, "taskstatus_tasks_started_total") == 0  # refused: never started
    assert value(found, "taskstatus_tasks_canceled_total") == 1


def test_a_refused_publish_is_not_counted(memory_tracker, metrics, registry):
    with pytest.raises(ValueError, match="total_steps"):
        publish(memory_tracker, "negative", total_steps=-1)
    assert value(samples(registry), "taskstatus_tasks_published_total") == 0


def test_containers_are_not_counted(memory_tracker, metrics, registry):
    publish(memory_tracker, "chain", container="test.chain", sequential=True)
    publish(memory_tracker, "step", parent="chain")
    memory_tracker.lifecycle.end(memory_tracker.lifecycle.start(event("step")))
    found = samples(registry)
    assert value(found, "taskstatus_tasks_published_total") == 1
    assert value(found, "taskstatus_tasks_published_total", task="test.chain") == 0
    assert value(found, "taskstatus_tasks_succeeded_total", task="tests.task") == 1
    assert memory_tracker.get_by_task_id("chain").state is State.SUCCEEDED


def test_prefix_and_constant_labels(memory_tracker, registry):
    prometheus.install(
        registry, "jobs", {"service": "billing", "region": "eu"}, tracker=memory_tracker
    )
    publish(memory_tracker, "one")
    found = samples(registry)
    assert value(found, "jobs_tasks_published_total", service="billing", region="eu") == 1
    assert value(found, "taskstatus_tasks_published_total") == 0


def test_installing_again_returns_the_same_plugin(memory_tracker, registry, metrics):
    assert prometheus.install(registry, tracker=memory_tracker) is metrics
    publish(memory_tracker, "once")
    assert value(samples(registry), "taskstatus_tasks_published_total") == 1
    with pytest.raises(ValueError, match="other constant labels"):
        prometheus.install(registry, const_labels={"service": "x"}, tracker=memory_tracker)


def test_counts_stay_exact_across_threads(memory_tracker, metrics, registry):
    lifecycle = memory_tracker.lifecycle
    ids = [f"t{i}" for i in range(200)]
    for task_id in ids:
        publish(memory_tracker, task_id)

    def run(chunk):
        for task_id in chunk:
            lifecycle.end(lifecycle.start(event(task_id)))

    threads = [threading.Thread(target=run, args=(ids[i::8],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    found = samples(registry)
    assert value(found, "taskstatus_tasks_started_total") == 200
    assert value(found, "taskstatus_tasks_succeeded_total") == 200


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"prefix": "9lives"}, ValueError, "prefix must be a Prometheus metric name"),
        ({"prefix": "task-status"}, ValueError, "prefix must be a Prometheus metric name"),
        ({"const_labels": {"queue": "x"}}, ValueError, "a label of the metrics themselves"),
        ({"const_labels": {"my-label": "x"}}, ValueError, "not a Prometheus label name"),
        ({"const_labels": {"__name": "x"}}, ValueError, "not a Prometheus label name"),
        ({"const_labels": {"shard": 3}}, TypeError, "must be text"),
        ({"const_labels": ["shard"]}, TypeError, "must be a mapping"),
        ({"registry": "default"}, TypeError, "CollectorRegistry"),
    ],
)
def test_bad_arguments_say_what_is_wrong(kwargs, error, match):
    kwargs.setdefault("registry", CollectorRegistry())
    with pytest.raises(error, match=match):
        prometheus.install(**kwargs)


@pytest.mark.parametrize("port", [-1, 70000, "9100", True])
def test_a_bad_port_says_what_is_wrong(port):
    with pytest.raises(ValueError, match="port must be an int from 0 to 65535"):
        prometheus.start_http_server(port)


def test_start_http_server_serves_the_registry(memory_tracker, metrics, registry):
    port = free_port()
    server, thread = prometheus.start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        publish(memory_tracker, "served")
        assert value(scrape(port), "taskstatus_tasks_published_total") == 1
    finally:
        server.shutdown()
        thread.join(TIMEOUT)


def test_without_prometheus_client_the_errors_name_the_extra():
    blocked = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'prometheus_client':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import taskstatus.observability\n"
        "try:\n"
        "    import taskstatus.observability.prometheus\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
        "import taskstatus\n"
        "from starlette.testclient import TestClient\n"
        "from taskstatus.web.serve import serve_app\n"
        "app = serve_app(taskstatus.configure(url='memory://'), 't')\n"
        "answer = TestClient(app).get('/metrics', headers={'Authorization': 'Bearer t'})\n"
        "print(answer.status_code, answer.text)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(
        [sys.executable, "-c", blocked],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    )
    module_error, _, served = done.stdout.partition("\n")
    assert "pip install 'taskstatus[prometheus]'" in module_error, done.stdout + done.stderr
    # taskstatus serve still runs; its /metrics names the extra.
    assert served.startswith("501 ") and "taskstatus[prometheus]" in served


# -- the store-wide gauges ---------------------------------------------------------------------
def _fill(tracker):
    """Two tasks In Progress, one of each other state, and a container In Progress."""
    lifecycle = tracker.lifecycle
    for task_id in ("pending", "first", "second", "retrying", "done", "failed", "canceled"):
        publish(tracker, task_id)
    publish(tracker, "group", container="test.group")
    publish(tracker, "member", parent="group")
    lifecycle.start(event("member"))
    lifecycle.start(event("first"))
    lifecycle.start(event("second"))
    lifecycle.end(lifecycle.start(event("retrying")), exception=OSError(), retrying=True)
    lifecycle.end(lifecycle.start(event("done")))
    lifecycle.end(lifecycle.start(event("failed")), exception=ValueError())
    tracker.cancel(tracker.get_by_task_id("canceled"))


def test_summary_counts_by_state_and_finds_the_oldest_run(tracker):
    """Every store, SQL ones on a real database of each kind."""
    _fill(tracker)
    summary = tracker.summary()
    assert dict(summary.counts) == {
        State.PENDING: 1,
        State.IN_PROGRESS: 4,  # member, first, second and the group
        State.RETRYING: 1,
        State.SUCCEEDED: 1,
        State.FAILED: 1,
        State.CANCELED: 1,
    }
    member = tracker.get_by_task_id("member")
    assert summary.oldest_in_progress == member.started_at


def test_summary_of_an_empty_store(tracker):
    summary = tracker.summary()
    assert (dict(summary.counts), summary.oldest_in_progress) == ({}, None)


def test_the_sql_summary_is_two_selects(sql_tracker):
    _fill(sql_tracker)
    sql_tracker.recorder.drain()
    with sql_statements(sql_tracker.store.engine) as seen:
        sql_tracker.store.summary()
    assert len(seen["select"]) == 2


def test_serve_metrics_shows_the_store_wide_gauges(memory_tracker):
    _fill(memory_tracker)
    oldest = memory_tracker.get_by_task_id("member").started_at
    client = TestClient(serve_app(memory_tracker, "s3cret"))
    assert client.get("/metrics").status_code == 401
    at_least = (datetime.now(timezone.utc) - oldest).total_seconds()
    answer = client.get("/metrics", headers={"Authorization": "Bearer s3cret"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    found = parse(answer.text)
    by_state = {s.value: value(found, "taskstatus_statuses", state=s.value) for s in State}
    assert by_state == {
        "Pending": 1,
        "In Progress": 4,
        "Retrying": 1,
        "Succeeded": 1,
        "Failed": 1,
        "Canceled": 1,
    }
    assert value(found, "taskstatus_oldest_in_progress_age_seconds") >= at_least
    assert all(name.startswith("taskstatus_") for name, _ in found)
    assert not any(label == "user_id" for _, labels in found for label, _ in labels)


def test_taskstatus_serve_process_exposes_metrics(make_tracker, tmp_path):
    url = f"sqlite:///{tmp_path / 'served.db'}"
    tracker = make_tracker(url)
    publish(tracker, "waiting")
    tracker.close()
    port = free_port()
    serve = ("serve", "--port", str(port), "--url", url)
    with taskstatus_process(*serve, env={"TASKSTATUS_TOKEN": "s3cret"}, stdout=subprocess.DEVNULL):
        found = poll(
            lambda: _try_scrape(port, {"Authorization": "Bearer s3cret"}),
            lambda s: s is not None,
            "taskstatus serve to answer /metrics",
        )
        assert value(found, "taskstatus_statuses", state="Pending") == 1
        assert value(found, "taskstatus_statuses", state="Succeeded") == 0
        assert value(found, "taskstatus_oldest_in_progress_age_seconds") == 0


def _try_scrape(port, headers):
    try:
        return scrape(port, headers)
    except OSError:
        return None


def test_a_run_is_timed_and_in_progress_until_postrun(memory_tracker, metrics, registry):
    publish(memory_tracker, "timed")
    live = memory_tracker.lifecycle.start(event("timed"))
    during = samples(registry)
    assert value(during, "taskstatus_tasks_in_progress") == 1
    assert value(during, "taskstatus_task_runtime_seconds_count") == 0
    memory_tracker.lifecycle.end(live)
    after = samples(registry)
    assert value(after, "taskstatus_tasks_in_progress") == 0
    assert value(after, "taskstatus_task_runtime_seconds_count") == 1
    assert value(after, "taskstatus_task_runtime_seconds_sum") > 0


def test_queue_wait_from_the_carrier_at_the_first_start_only(memory_tracker, metrics, registry):
    carrier: dict[str, str] = {}
    memory_tracker.lifecycle.publish(event("waited", user_id="7", carrier=carrier))
    assert float(carrier[prometheus.PUBLISHED_AT]) > 0
    lifecycle = memory_tracker.lifecycle
    lifecycle.end(lifecycle.start(event("waited", carrier=carrier, attempt=1)), retrying=True)
    lifecycle.end(lifecycle.start(event("waited", carrier=carrier, attempt=2)))
    found = samples(registry)
    assert value(found, "taskstatus_task_runtime_seconds_count") == 2
    assert value(found, "taskstatus_task_queue_wait_seconds_count") == 1


def test_a_foreign_publish_time_is_ignored(memory_tracker, metrics, registry):
    publish(memory_tracker, "edited")
    lifecycle = memory_tracker.lifecycle
    lifecycle.end(lifecycle.start(event("edited", carrier={prometheus.PUBLISHED_AT: "noon"})))
    found = samples(registry)
    assert value(found, "taskstatus_tasks_succeeded_total") == 1
    assert value(found, "taskstatus_task_queue_wait_seconds_count") == 0


# -- the dashboard and alert rules shipped in docs/ -------------------------------------------
def _exported_names():
    """Every sample name the plugin and the store-wide gauges export, each series present."""
    from taskstatus import Tracker
    from taskstatus.settings import Settings

    tracker = Tracker(Settings(url="memory://"))
    registry = CollectorRegistry()
    prometheus.install(registry, tracker=tracker)
    _fill(tracker)
    tracker.hook.taskstatus_fail(event=event("pending", message=messages.WORKER_LOST))
    names = {name for name, _ in samples(registry)}
    names |= {
        name for name, _ in parse(generate_latest(prometheus.store_collector(tracker)).decode())
    }
    return names


def _metric_names(text):
    return set(re.findall(r"\btaskstatus_[a-z_]+", text))


def test_the_grafana_dashboard_uses_only_exported_metrics():
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    exprs += [var["query"]["query"] for var in dashboard["templating"]["list"]]
    used = set().union(*map(_metric_names, exprs))
    assert used, "the dashboard queries no metric"
    assert used <= _exported_names(), used - _exported_names()
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_the_alert_rules_use_only_exported_metrics():
    rules = yaml.safe_load((ROOT / "docs" / "prometheus-alerts.yml").read_text())
    alerts = {rule["alert"]: rule["expr"] for group in rules["groups"] for rule in group["rules"]}
    assert set(alerts) == {
        "TaskstatusHighFailureRate",
        "TaskstatusTaskStuckInProgress",
        "TaskstatusWorkerLost",
    }
    used = set().union(*map(_metric_names, alerts.values()))
    assert "taskstatus_oldest_in_progress_age_seconds" in used
    assert "taskstatus_tasks_lost_total" in used
    assert used <= _exported_names(), used - _exported_names()
