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

    python benchmarks/rq_overhead.py [--backends sqlite,postgresql] [--quick] [-n N]
        [--rounds R] [--workers simple,fork]

N defaults to 1,000 for SimpleWorker and 200 for the forking Worker (a fork per job; a tenth of
that with ``--quick``), rounds to 5 (1 with ``--quick``). Redis is ``TASKSTATUS_BENCH_REDIS``
(default ``redis://127.0.0.1:6379/0``); PostgreSQL is ``TASKSTATUS_BENCH_POSTGRES``.
"""

from __future__ import annotations

import argparse
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
    bench_tracker,
    machine,
    overhead_rounds,
    print_table,
    run_main,
)

HERE = Path(__file__).resolve().parent
WARMUP = 20
REDIS = os.environ.get("TASKSTATUS_BENCH_REDIS", "redis://127.0.0.1:6379/0")
WORKERS = {"simple": "taskstatus.queues.rq.SimpleWorker", "fork": "taskstatus.queues.rq.Worker"}
COUNTS = {"simple": 1000, "fork": 200}


def drain(queue_name: str, worker: str, store: str, tmp: Path) -> None:
    env = {
        **os.environ,
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


def one_round(backend: str, worker: str, n: int, tracked_first: bool) -> tuple[float, float]:
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
        seconds = {"u": 0.0, "t": 0.0}
        for kind, half in order:
            drain(queues[(kind, half)].name, worker, tracker.settings.url, tmp)
            seconds[kind] += span(Job.fetch_many(ids[(kind, half)], connection=connection))
        tracked_ids = [i for (kind, _), run_ids in ids.items() if kind == "t" for i in run_ids]
        states = {taskstatus.get_by_task_id(task_id).state for task_id in tracked_ids}
        if states != {State.SUCCEEDED}:
            raise RuntimeError(f"tracked statuses ended {sorted(s.value for s in states)}")
        for queue in queues.values():
            queue.delete(delete_jobs=True)
        taskstatus.get_tracker().close()
        return n / seconds["u"], n / seconds["t"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("-n", type=int, default=None, help="timed jobs per run")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--workers", default="simple,fork", help="simple,fork (default: both)")
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.quick else 5)
    backends = [b for b in args.backends if b in OVERHEAD_TARGETS]
    workers = [w for w in args.workers.split(",") if w in WORKERS]
    print(f"RQ overhead benchmark: {rounds} round(s); {machine()}")
    rows = []
    all_met = True
    for worker in workers:
        n = args.n or (COUNTS[worker] // (10 if args.quick else 1))
        for backend in backends:
            cells, met = overhead_rounds(
                f"{worker} / {backend}",
                backend,
                rounds,
                "jobs",
                lambda r, backend=backend, worker=worker, n=n: one_round(
                    backend, worker, n, tracked_first=bool(r % 2)
                ),
            )
            all_met &= met
            rows.append([worker, backend, n, *cells])
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
