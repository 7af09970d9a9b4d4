"""Scraping and reading Prometheus metrics in tests: what the workers count, and what the
test process publishes."""

from __future__ import annotations

import contextlib
import socket
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from taskstatus import State, Tracker
from tests.observability.switch import PORT
from tests.waiting import poll, wait_state

#: Samples by (name, labels).
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def worker_env(port: int, multiproc_dir: Path | None) -> dict[str, str]:
    """The environment that turns the switch on (multiprocess mode with a directory)."""
    env = {PORT: str(port), "TASKSTATUS_METRICS_PORT": str(port)}
    env["TASKSTATUS_METRICS_ADDR"] = "127.0.0.1"
    if multiproc_dir is not None:
        multiproc_dir.mkdir(parents=True, exist_ok=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(multiproc_dir)
    return env


def parse(text: str) -> Samples:
    """Every sample of an exposition, by name and labels, read by prometheus_client's own
    parser."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(port: int, headers: Mapping[str, str] | None = None) -> Samples:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers=headers or {})
    with urllib.request.urlopen(request, timeout=5) as response:
        return parse(response.read().decode())


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, found), v in samples.items() if n == name and wanted <= found)


def counts(samples: Samples, name: str, label: str = "task") -> dict[str, float]:
    """The non-zero values of ``name`` by one label, summed over the others."""
    found: dict[str, float] = {}
    for (n, labels), v in samples.items():
        if n == name and v:
            key = dict(labels).get(label, "")
            found[key] = found.get(key, 0) + v
    return found


@contextlib.contextmanager
def counting_here(tracker: Tracker) -> Iterator[CollectorRegistry]:
    """Count what this process publishes through ``tracker``, on a registry of its own."""
    from taskstatus.observability import prometheus

    registry = CollectorRegistry()
    plugin = prometheus.install(registry, tracker=tracker)
    try:
        yield registry
    finally:
        tracker.pm.unregister(plugin)


def here(registry: CollectorRegistry) -> Samples:
    return parse(generate_latest(registry).decode())


#: The tasks of the known mix each queue's test runs, by their part in it.
MIX = {"ok": 3, "bad": 2, "flaky": 1, "slow": 1}


def finish_mix(sent: Mapping[str, Sequence[str]], marker: Path) -> dict[str, str]:
    """Once the mix's task ids (by part) are sent: cancel the slow task once it runs (it
    creates ``marker``), wait for each task's end; the task class of each part."""
    poll(marker.exists, bool, "the slow task to start")
    wait_state(sent["slow"][0], State.IN_PROGRESS).cancel()
    ends = {"ok": State.SUCCEEDED, "bad": State.FAILED, "flaky": State.SUCCEEDED}
    ends["slow"] = State.CANCELED
    task = {}
    for part, ids in sent.items():
        for task_id in ids:
            task[part] = wait_state(task_id, ends[part]).task_class
    return task


def mix_counts(task: Mapping[str, str]) -> dict[str, dict[str, float]]:
    """What a worker counts after the mix: three successes (``ok``), two failures raising
    ValueError (``bad``), one task failing once then succeeding on its retry (``flaky``),
    one canceled while it runs (``slow``); ``task`` names each one's task class."""
    ok, bad, flaky, slow = task["ok"], task["bad"], task["flaky"], task["slow"]
    runs = {ok: 3, bad: 2, flaky: 2, slow: 1}
    return {
        # A retry is not a publish, not even where the queue sends a new message for it.
        "taskstatus_tasks_published_total": {},
        "taskstatus_tasks_started_total": runs,
        "taskstatus_tasks_succeeded_total": {ok: 3, flaky: 1},
        "taskstatus_tasks_failed_total": {bad: 2},
        "taskstatus_tasks_retried_total": {flaky: 1},
        "taskstatus_tasks_canceled_total": {slow: 1},
        "taskstatus_tasks_lost_total": {},
        "taskstatus_tasks_in_progress": {},
        # Every run is timed where it ran; only the first start of each task waited in its
        # queue since the publish.
        "taskstatus_task_runtime_seconds_count": runs,
        "taskstatus_task_queue_wait_seconds_count": {ok: 3, bad: 2, flaky: 1, slow: 1},
    }


def answers(port: int) -> bool:
    """Whether a server listens on ``port``."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def wait_for_mix(port: int, task: Mapping[str, str]) -> Samples:
    """Scrape the worker until it shows exactly the counts of the mix; its samples."""
    expected = mix_counts(task)
    # The server may be a process of its own, started beside the worker's.
    poll(lambda: answers(port), bool, f"the worker's metrics server on port {port}")

    def seen() -> dict[str, dict[str, float]]:
        samples = scrape(port)
        return {name: counts(samples, name) for name in expected}

    poll(seen, lambda found: found == expected, f"the worker's metrics to be {expected}")
    samples = scrape(port)
    assert counts(samples, "taskstatus_tasks_failed_total", "exception") == {"ValueError": 2}
    for name in ("taskstatus_task_runtime_seconds_sum", "taskstatus_task_queue_wait_seconds_sum"):
        assert value(samples, name) > 0, f"{name} has no observations"
    return samples


def store_gauges(tracker: Tracker) -> dict[str, float]:
    """``taskstatus serve``'s ``/metrics`` for the store of ``tracker``: statuses by state."""
    from starlette.testclient import TestClient

    from taskstatus.web.serve import serve_app

    answer = TestClient(serve_app(tracker, "s3cret")).get(
        "/metrics", headers={"Authorization": "Bearer s3cret"}
    )
    assert answer.status_code == 200, answer.text
    samples = parse(answer.text)
    assert value(samples, "taskstatus_oldest_in_progress_age_seconds") == 0
    return counts(samples, "taskstatus_statuses", "state")


#: The store after the mix: (the states of) the tasks of :func:`mix_counts`.
MIX_STATES = {"Succeeded": 4, "Failed": 2, "Canceled": 1}
