"""The files of a worker that forks children one at a time (``sequential_children``), in a
process of their own: the worker counts, forks children that count one after another (one
adds a new series, one is killed in the middle of a task, one forks a child of its own),
and prometheus_client's MultiProcessCollector reads the sum."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

SCRIPT = textwrap.dedent(
    """
    import json, os, signal, sys, time

    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
    from prometheus_client import values
    from prometheus_client.multiprocess import MultiProcessCollector

    from taskstatus.observability.sequential_children import SequentialChildren

    values.ValueClass = SequentialChildren(os.environ["PROMETHEUS_MULTIPROC_DIR"]).value_class()
    runs = Counter("runs", "Runs.", ["task"], registry=None)
    running = Gauge("running", "Running.", ["task"], registry=None, multiprocess_mode="livesum")
    took = Histogram("took", "Took.", ["task"], registry=None, buckets=(1, 10))

    def child(body):
        pid = os.fork()
        if pid == 0:
            try:
                body()
            finally:
                os._exit(0)
        return pid

    def run(task, seconds):
        running.labels(task).inc()
        runs.labels(task).inc()
        took.labels(task).observe(seconds)
        running.labels(task).dec()

    run("a", 0.5)                                      # the worker itself
    for i in range(3):                                 # three children, one after another
        os.waitpid(child(lambda: run("a", 5)), 0)
    os.waitpid(child(lambda: run("b", 20)), 0)         # a series no process had before

    def killed():
        running.labels("a").inc()
        runs.labels("a").inc()
        time.sleep(60)

    pid = child(killed)
    while True:                                        # until it counted its start
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        if registry.get_sample_value("running", {"task": "a"}) == 1:
            break
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)

    def forks_too():
        run("a", 5)
        os.waitpid(child(lambda: run("c", 5)), 0)      # a child's child: files of its own
        run("a", 5)

    os.waitpid(child(forks_too), 0)
    os.waitpid(child(lambda: run("b", 20)), 0)

    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    found = {
        f"{sample.name}{{{sample.labels.get('task')},{sample.labels.get('le', '')}}}": sample.value
        for metric in registry.collect()
        for sample in metric.samples
    }
    json.dump(found, sys.stdout)
    """
)


def test_children_one_at_a_time_count_into_one_set_of_files(tmp_path: Path):
    directory = tmp_path / "prometheus"
    directory.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    command = [sys.executable, "-c", SCRIPT]
    done = subprocess.run(command, check=False, env=env, capture_output=True, text=True, timeout=50)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    # a: the worker's run, three children, the killed one's start, two runs of forks_too.
    assert found["runs_total{a,}"] == 7
    assert found["runs_total{b,}"] == 2
    assert found["runs_total{c,}"] == 1
    # The killed child's task no longer counts as running once the next child started.
    assert found["running{a,}"] == found["running{b,}"] == found["running{c,}"] == 0
    assert found["took_count{a,}"] == 6
    assert found["took_sum{a,}"] == 0.5 + 5 * 5
    assert found["took_bucket{a,1.0}"] == 1
    assert found["took_bucket{a,10.0}"] == 6
    assert found["took_bucket{b,+Inf}"] == 2
    # One set for the worker, one for all its children, one for the child's child.
    owners = {name.removesuffix(".db").rpartition("_")[2] for name in os.listdir(directory)}
    assert len(owners) == 3, owners
    assert sum(owner.endswith("-child") for owner in owners) == 1
