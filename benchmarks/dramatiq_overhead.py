"""Throughput cost of tracking a trivial Dramatiq actor, on one real worker over Redis.

Two actors that differ only in tracking (``benchmarks/_dramatiq_app.py``). For each store (a
fresh SQLite file; a private PostgreSQL schema, dropped at the end) and each round, in the
same run: W = 20 warm-up + N messages of each actor are sent to a queue of their own (the
tracked ones record their Pending status first), then a real worker process
``dramatiq _dramatiq_app --processes 1 --threads T`` drains each queue in turn (which goes
first alternates between rounds). A middleware outside taskstatus's reads
``time.perf_counter()`` before and after each message; worker throughput = N / (end of the
last timed message - start of the first). Ratio = tracked / untracked of the same round,
median over rounds, judged against the issue's targets: >= 0.9 on SQLite, >= 0.8 on
PostgreSQL. Every tracked status is then checked to be Succeeded.

"Paired", as ``celery_overhead.py``: one more worker run drains a queue of N messages of each
actor in alternating blocks of 200 (after W of each); msgs/s of each actor = its messages over
the sum of their cycles (a message's start to the next message's start, in the order the
worker started them), so that both meet the same load of the machine. The worker's threads
and prefetch overlap the first messages of a block with the last ones of the previous block,
which brings the two rates closer: blocks are long so that this stays small (a run shorter
than two blocks a kind, as with ``--quick``, is not a fair comparison). The paired ratio
varies far less on a shared machine; it is judged against 0.95.

    python benchmarks/dramatiq_overhead.py [--backends sqlite,postgresql] [--quick] [-n N]
        [--rounds R] [--threads T] [--plugin prometheus]

``--plugin prometheus`` measures everything again with the Prometheus plugin installed in the
publishing process and in the workers (multiprocess mode where the worker forks), and prints
the ratios without and with it.

N defaults to 2,000 (200 with ``--quick``), rounds to 3 (1 with ``--quick``), threads to 8
(Dramatiq's default).
The broker is ``TASKSTATUS_BENCH_REDIS`` (default ``redis://127.0.0.1:6379/0``); PostgreSQL is
``TASKSTATUS_BENCH_POSTGRES`` as for the other benchmarks.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
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
STOP_SECONDS = 10.0
#: Messages of one actor in a row in the paired (mixed) run, and the paired ratio's target.
BLOCK = 200


def drain(
    kind: str, suffix: str, store: str, tmp: Path, count: int, threads: int
) -> dict[str, Any]:
    """Run one worker on the queue of ``kind`` (``mixed``: both actors') until its ``count``
    timed messages are done: their timings."""
    timings = tmp / f"timings-{kind}-{uuid.uuid4().hex[:6]}.json"
    env = {
        **os.environ,
        **({"TS_BENCH_MIXED": "1"} if kind == "mixed" else {}),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
        "TS_BENCH_QUEUE": suffix,
        "TS_BENCH_STORE": store,
        "TS_BENCH_ARTIFACTS": str(tmp / "artifacts"),
        "TS_BENCH_SKIP": str(2 * WARMUP if kind == "mixed" else WARMUP),
        "TS_BENCH_EXPECTED": str(count),
        "TS_BENCH_TIMINGS": str(timings),
    }
    command = [str(Path(sys.executable).with_name("dramatiq")), "_dramatiq_app"]
    command += ["--processes", "1", "--threads", str(threads), "--queues", f"{kind}-{suffix}"]
    with (tmp / f"worker-{kind}.log").open("ab") as log:
        proc = subprocess.Popen(command, cwd=HERE, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while not timings.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the {kind} worker stopped early; see {tmp}/worker-{kind}.log")
            time.sleep(0.05)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return dict(json.loads(timings.read_text()))


def rate(data: dict[str, Any]) -> float:
    """Msgs/s of a run of one actor."""
    return len(data["ends"]) / (data["ends"][-1] - data["starts"][0])


def paired(data: dict[str, Any], tracked_actor: str) -> tuple[float, float]:
    """Msgs/s of each actor in a mixed run (untracked, tracked): its messages over the sum of
    their cycles."""
    started = sorted(zip(data["starts"], data["actors"], strict=True))
    seconds = {False: 0.0, True: 0.0}
    counts = {False: 0, True: 0}
    for (start, actor), (following, _) in itertools.pairwise(started):
        kind = actor == tracked_actor
        seconds[kind] += following - start
        counts[kind] += 1
    return counts[False] / seconds[False], counts[True] / seconds[True]


def one_round(
    backend: str, n: int, threads: int, tracked_first: bool
) -> tuple[tuple[float, float], tuple[float, float]]:
    import _dramatiq_app as app

    import taskstatus
    from taskstatus import State

    with bench_tracker(backend) as tracker, tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        taskstatus.configure(url=tracker.settings.url, artifact_storage=str(tmp / "artifacts"))
        suffix = uuid.uuid4().hex[:10]
        for actor, kind in ((app.noop, "untracked"), (app.tracked_noop, "tracked")):
            actor.queue_name = f"{kind}-{suffix}"
            app.broker.declare_actor(actor)
        sent = [app.tracked_noop.send(7, i).message_id for i in range(WARMUP + n)]
        for i in range(WARMUP + n):
            app.noop.send(7, i)
        sent += send_mixed(app, f"mixed-{suffix}", n, tracked_first)
        rates: dict[str, float] = {}
        order = ["tracked", "untracked"] if tracked_first else ["untracked", "tracked"]
        for kind in order:
            rates[kind] = rate(drain(kind, suffix, tracker.settings.url, tmp, n, threads))
        mixed = drain("mixed", suffix, tracker.settings.url, tmp, 2 * n, threads)
        states = {taskstatus.get_by_task_id(task_id).state for task_id in sent}
        if states != {State.SUCCEEDED}:
            raise RuntimeError(f"tracked statuses ended {sorted(s.value for s in states)}")
        for kind in ("untracked", "tracked", "mixed"):
            app.broker.flush(f"{kind}-{suffix}")
        taskstatus.get_tracker().close()
        pair = paired(mixed, app.tracked_noop.actor_name)
        return (rates["untracked"], rates["tracked"]), pair


def send_mixed(app: Any, queue: str, n: int, tracked_first: bool) -> list[str]:
    """W messages of each actor, then ``n`` of each in alternating blocks of BLOCK, to
    ``queue``; returns the tracked messages' ids."""
    actors = (app.tracked_noop, app.noop) if tracked_first else (app.noop, app.tracked_noop)
    tracked: list[str] = []

    for actor in actors:
        actor.queue_name = queue
        app.broker.declare_actor(actor)

    def send(actor: Any, numbers: range) -> None:
        for i in numbers:
            message = actor.send(7, i)
            if actor is app.tracked_noop:
                tracked.append(message.message_id)

    for actor in actors:
        send(actor, range(WARMUP))
    for start in range(0, n, BLOCK):
        for actor in actors:
            send(actor, range(start, min(n, start + BLOCK)))
    return tracked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("-n", type=int, default=None, help="timed messages per run")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument(
        "--threads", type=int, default=8, help="worker threads (default 8, as Dramatiq)"
    )
    add_plugin_argument(parser)
    args = parser.parse_args()
    n = args.n or (200 if args.quick else 2000)
    rounds = args.rounds or (1 if args.quick else 3)
    backends = [b for b in args.backends if b in OVERHEAD_TARGETS]
    print(
        f"Dramatiq overhead benchmark: N = {n:,} (+{WARMUP} warm-up) per run, {rounds} round(s), "
        f"{args.threads} worker thread(s); {machine()}"
    )
    rows = []
    all_met = True
    for plugin in plugin_passes(args.plugin):
        install_plugin(plugin)
        for backend in backends:
            label = plugin_label(backend, plugin)
            pairs: list[tuple[float, float]] = []

            def run(
                r: int, label: str = label, backend: str = backend, pairs: list = pairs
            ) -> tuple[float, float]:
                separate, pair = one_round(backend, n, args.threads, tracked_first=bool(r % 2))
                pairs.append(pair)
                print(
                    f"  {label} round {r + 1}: paired in one worker: untracked {pair[0]:,.0f} "
                    f"msgs/s, tracked {pair[1]:,.0f} msgs/s, ratio {pair[1] / pair[0]:.3f}",
                    flush=True,
                )
                return separate

            cells, met = overhead_rounds(label, backend, rounds, "msgs", run)
            paired, paired_met = paired_cells(pairs)
            all_met &= met and paired_met
            rows.append([label, *cells])
            rows.append([f"{label}, paired", *paired])
    print_table(
        "Worker throughput, one dramatiq worker process over Redis (median of rounds)",
        ["store", "untracked msgs/s", "tracked msgs/s", "ratio", "range", "target", "result"],
        rows,
    )
    print("Overall:", "all targets met" if all_met else "some targets MISSED")


if __name__ == "__main__":
    run_main(main)
