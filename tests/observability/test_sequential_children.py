"""The files of a worker that forks children one at a time (``sequential_children``), in a
process of their own: the worker counts and forks children that count one after another (one
adds a new series, one is killed in the middle of a task, one forks a child of its own), while
a child that never counts runs all along (as RQ's scheduler does); then two counting children
run side by side (as ``rq worker-pool``'s workers). prometheus_client's MultiProcessCollector
reads the sums."""

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
            except BaseException as exc:
                print(f"in child {os.getpid()}: {exc!r}", file=sys.stderr, flush=True)
            finally:
                os._exit(0)
        return pid

    def run(task, seconds):
        running.labels(task).inc()
        runs.labels(task).inc()
        took.labels(task).observe(seconds)
        running.labels(task).dec()

    def sample(name, task):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return registry.get_sample_value(name, {"task": task})

    def until(condition):
        deadline = time.monotonic() + 20
        while not condition():
            assert time.monotonic() < deadline, "waited 20 s"
            time.sleep(0.01)

    quiet = child(lambda: time.sleep(60))              # never counts, runs all along
    try:
        run("a", 0.5)                                  # the worker itself
        for i in range(3):                             # three children, one after another
            os.waitpid(child(lambda: run("a", 5)), 0)
        os.waitpid(child(lambda: run("b", 20)), 0)     # a series no process had before

        def killed():
            runs.labels("a").inc()
            running.labels("a").inc()                  # seen by the worker: then killed
            time.sleep(60)

        pid = child(killed)
        try:
            until(lambda: sample("running", "a") == 1)    # it counted its start
        finally:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)

        def forks_too():
            run("a", 5)
            os.waitpid(child(lambda: run("c", 5)), 0)  # a child's child
            run("a", 5)

        os.waitpid(child(forks_too), 0)
        os.waitpid(child(lambda: run("b", 20)), 0)

        def side_by_side(task):
            def body():
                run(task, 5)
                running.labels(task).inc()             # until the worker has seen both
                until(lambda: os.path.exists(os.environ["TS_GO"]))
                running.labels(task).dec()
            return body

        pids = [child(side_by_side("d")), child(side_by_side("e"))]
        until(lambda: sample("running", "d") == 1 and sample("running", "e") == 1)
        open(os.environ["TS_GO"], "w").close()
        for pid in pids:
            os.waitpid(pid, 0)
    finally:
        os.kill(quiet, signal.SIGKILL)
        os.waitpid(quiet, 0)

    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    found = {
        f"{sample.name}{{{sample.labels.get('task')},{sample.labels.get('le', '')}}}": sample.value
        for metric in registry.collect()
        for sample in metric.samples
    }
    json.dump({"worker": os.getpid(), "samples": found}, sys.stdout)
    """
)


def test_children_one_at_a_time_count_into_one_set_of_files(tmp_path: Path):
    directory = tmp_path / "prometheus"
    directory.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory), "TS_GO": str(tmp_path / "go")}
    command = [sys.executable, "-c", SCRIPT]
    done = subprocess.run(command, check=False, env=env, capture_output=True, text=True, timeout=50)
    assert done.returncode == 0 and not done.stderr, done.stderr
    result = json.loads(done.stdout)
    found = result["samples"]
    # a: the worker's run, three children, the killed one's start, two runs of forks_too.
    assert found["runs_total{a,}"] == 7
    assert found["runs_total{b,}"] == 2
    assert found["runs_total{c,}"] == found["runs_total{d,}"] == found["runs_total{e,}"] == 1
    # The killed child's task no longer counts as running once the next child counted.
    for task in "abcde":
        assert found[f"running{{{task},}}"] == 0, task
    assert found["took_count{a,}"] == 6
    assert found["took_sum{a,}"] == 0.5 + 5 * 5
    assert found["took_bucket{a,1.0}"] == 1
    assert found["took_bucket{a,10.0}"] == 6
    assert found["took_bucket{b,+Inf}"] == 2
    # The worker's set, one for all the children that ran one after another (the first of
    # the two side by side included), one for the child's child, one for the second of the
    # two side by side.
    owners = {p.stem.rpartition("_")[2] for p in directory.glob("*.db")}
    worker = str(result["worker"])
    assert {worker, f"{worker}-child"} < owners
    assert len(owners) == 4, owners
