"""Throughput cost of tracking a trivial RQ job, on one real worker over Redis.

Two functions that differ only in tracking (``benchmarks/_rq_jobs.py``). For each worker class
(``taskstatus.queues.rq.SimpleWorker``, and the forking ``taskstatus.queues.rq.Worker``), each
store (a fresh SQLite file; a private PostgreSQL schema, dropped at the end) and each round, in
the same run: each function's N jobs are split over two queues of their own, each after W = 20
warm-up jobs (the tracked ones record their Pending status first), then ``rq worker --burst -w
<class>`` drains each queue in turn, A B B A (A is the untracked function in odd rounds), so that
a slow spell of a shared machine weighs on both alike. Worker throughput = N / the sum over the
two runs of (``ended_at`` of the last timed job - ``started_at`` of the first), as RQ records
them. Ratio = tracked /
untracked of the same round, median over rounds, judged against the issue's targets: >= 0.9
on SQLite, >= 0.8 on PostgreSQL. Every tracked status is then checked to be Succeeded.

"Paired", as ``celery_overhead.py``: a fifth queue gets N jobs of each function in alternating
blocks of 20 (after W of each), drained by one more worker run; jobs/s of each function = its
jobs over the sum of their cycles (``started_at`` to the next job's ``started_at``), so that
both meet the same load of the machine. The paired ratio varies far less on a shared machine;
it is judged against 0.95.

    python benchmarks/rq_overhead.py [--backends sqlite,postgresql] [--quick] [-n N]
        [--rounds R] [--workers simple,fork] [--plugin prometheus]

``--plugin prometheus`` measures everything again with the Prometheus plugin installed in the
publishing process and in the workers (multiprocess mode where the worker forks), and prints
the ratios without and with it.

N defaults to 1,000 for SimpleWorker and 200 for the forking Worker (a fork per job; a tenth of
that with ``--quick``), rounds to 5 (1 with ``--quick``). Redis is ``TASKSTATUS_BENCH_REDIS``
(default ``redis://127.0.0.1:6379/0``); PostgreSQL is ``TASKSTATUS_BENCH_POSTGRES``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _support import (
    OVERHEAD_TARGETS,
    add_common_arguments,
    add_plugin_argument,
    bench_tracker,
    install_plugin,
    machine,
    overhead_rounds,
    paired_cells,
    plugin_label,
    plugin_passes,
    print_table,
    run_main,
)

HERE = Path(__file__).resolve().parent
WARMUP = 20
REDIS = os.environ.get("TASKSTATUS_BENCH_REDIS", "redis://127.0.0.1:6379/0")
WORKERS = {"simple": "taskstatus.queues.rq.SimpleWorker", "fork": "taskstatus.queues.rq.Worker"}
COUNTS = {"simple": 1000, "fork": 200}
#: Jobs of one function in a row in the paired (mixed) run, and the paired ratio's target.
BLOCK = 20


def drain(queue_name: str, worker: str, store: str, tmp: Path) -> None:
    # A plugin counts in multiprocess mode where the worker forks (docs/observability.md).
    forked = {"PROMETHEUS_MULTIPROC_DIR": str(tmp / "prometheus")} if worker == "fork" else {}
    if forked:
        (tmp / "prometheus").mkdir(exist_ok=True)
    env = {
        **os.environ,
        **forked,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
        "TASKSTATUS_URL": store,
        "TASKSTATUS_ARTIFACT_STORAGE": str(tmp / "artifacts"),
    }
    rq = str(Path(sys.executable).with_name("rq"))
    command = [rq, "worker", "--burst", "-w", WORKERS[worker], "--url", REDIS, queue_name]
    with (tmp / "worker.log").open("ab") as log:
        subprocess.run(command, cwd=HERE, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)


def span(jobs: Sequence[Any]) -> float:
    """Seconds from the start of the first timed job to the end of the last, as RQ records."""
    timed = jobs[WARMUP:]
    first = min(j.started_at for j in timed)
    last = max(j.ended_at for j in timed)
    return float((last - first).total_seconds())


def paired(jobs: Sequence[Any], tracked: set[str]) -> tuple[float, float]:
    """Jobs/s of each function in a mixed run (untracked, tracked): its jobs over the sum of
    their cycles, from a job's start to the next job's, warm-up jobs left out."""
    ordered = sorted(jobs, key=lambda j: j.started_at)
    seconds = {False: 0.0, True: 0.0}
    counts = {False: 0, True: 0}
    for job, following in itertools.pairwise(ordered):
        if job.meta.get("warm-up"):
            continue
        kind = job.id in tracked
        seconds[kind] += (following.started_at - job.started_at).total_seconds()
        counts[kind] += 1
    return counts[False] / seconds[False], counts[True] / seconds[True]


def enqueue_mixed(queue: Any, functions: dict[str, Any], n: int, tracked_first: bool) -> list[str]:
    """W warm-up jobs of each function, then ``n`` of each in alternating blocks of BLOCK."""
    kinds = ("t", "u") if tracked_first else ("u", "t")
    ids = []
    for kind in kinds:
        for i in range(WARMUP):
            job = queue.enqueue(functions[kind], 7, i, meta={"warm-up": True})
            ids.append(job.id)
    for start in range(0, n, BLOCK):
        for kind in kinds:
            ids += [
                queue.enqueue(functions[kind], 7, i).id for i in range(start, min(n, start + BLOCK))
            ]
    return ids


def one_round(
    backend: str, worker: str, n: int, tracked_first: bool
) -> tuple[tuple[float, float], tuple[float, float]]:
    import _rq_jobs
    from redis import Redis
    from rq import Queue
    from rq.job import Job

    import taskstatus
    import taskstatus.queues.rq
    from taskstatus import State

    taskstatus.queues.rq.install()
    connection = Redis.from_url(REDIS)
    functions = {"u": _rq_jobs.noop, "t": _rq_jobs.tracked_noop}
    first, second = ("t", "u") if tracked_first else ("u", "t")
    # A B B A: each function's n jobs in two runs of n/2, taken in turn.
    order = [(first, 0), (second, 0), (second, 1), (first, 1)]
    halves = (n // 2, n - n // 2)
    with bench_tracker(backend) as tracker, tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        taskstatus.configure(url=tracker.settings.url, artifact_storage=str(tmp / "artifacts"))
        suffix = uuid.uuid4().hex[:10]
        queues = {run: Queue(f"{run[0]}{run[1]}-{suffix}", connection=connection) for run in order}
        ids = {
            (kind, half): [
                queues[(kind, half)].enqueue(functions[kind], 7, i).id
                for i in range(WARMUP + halves[half])
            ]
            for kind, half in order
        }
        mixed = Queue(f"m-{suffix}", connection=connection)
        mixed_ids = enqueue_mixed(mixed, functions, n, tracked_first)
        seconds = {"u": 0.0, "t": 0.0}
        for kind, half in order:
            drain(queues[(kind, half)].name, worker, tracker.settings.url, tmp)
            seconds[kind] += span(Job.fetch_many(ids[(kind, half)], connection=connection))
        drain(mixed.name, worker, tracker.settings.url, tmp)
        mixed_jobs = [j for j in Job.fetch_many(mixed_ids, connection=connection) if j]
        tracked_ids = [i for (kind, _), run_ids in ids.items() if kind == "t" for i in run_ids]
        tracked_ids += [j.id for j in mixed_jobs if j.func_name.endswith("tracked_noop")]
        states = {taskstatus.get_by_task_id(task_id).state for task_id in tracked_ids}
        if states != {State.SUCCEEDED}:
            raise RuntimeError(f"tracked statuses ended {sorted(s.value for s in states)}")
        pair = paired(mixed_jobs, set(tracked_ids))
        for queue in [*queues.values(), mixed]:
            queue.delete(delete_jobs=True)
        taskstatus.get_tracker().close()
        return (n / seconds["u"], n / seconds["t"]), pair


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("-n", type=int, default=None, help="timed jobs per run")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--workers", default="simple,fork", help="simple,fork (default: both)")
    add_plugin_argument(parser)
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.quick else 5)
    backends = [b for b in args.backends if b in OVERHEAD_TARGETS]
    workers = [w for w in args.workers.split(",") if w in WORKERS]
    print(f"RQ overhead benchmark: {rounds} round(s); {machine()}")
    rows = []
    all_met = True
    for plugin, worker in itertools.product(plugin_passes(args.plugin), workers):
        install_plugin(plugin)
        n = args.n or (COUNTS[worker] // (10 if args.quick else 1))
        for backend in backends:
            label = plugin_label(backend, plugin)
            pairs: list[tuple[float, float]] = []

            def run(
                r: int,
                label: str = label,
                backend: str = backend,
                worker: str = worker,
                n: int = n,
                pairs: list[tuple[float, float]] = pairs,
            ) -> Any:
                separate, pair = one_round(backend, worker, n, tracked_first=bool(r % 2))
                pairs.append(pair)
                print(
                    f"  {worker} / {label} round {r + 1}: paired in one worker: untracked "
                    f"{pair[0]:,.0f} jobs/s, tracked {pair[1]:,.0f} jobs/s, "
                    f"ratio {pair[1] / pair[0]:.3f}",
                    flush=True,
                )
                return separate

            cells, met = overhead_rounds(f"{worker} / {label}", backend, rounds, "jobs", run)
            paired, paired_met = paired_cells(pairs)
            all_met &= met and paired_met
            rows.append([worker, label, n, *cells])
            rows.append([worker, f"{label}, paired", n, *paired])
    print_table(
        "Worker throughput, one rq worker over Redis (median of rounds)",
        [
            "worker",
            "store",
            "N",
            "untracked jobs/s",
            "tracked jobs/s",
            "ratio",
            "range",
            "target",
            "result",
        ],
        rows,
    )
    print("Overall:", "all targets met" if all_met else "some targets MISSED")


if __name__ == "__main__":
    run_main(main)
