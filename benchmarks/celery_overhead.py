"""Throughput cost of tracking a trivial Celery task, on one real solo worker over Redis.

Two tasks that differ only in tracking (``benchmarks/_celery_app.py``)::

    @app.task                                  @taskstatus.track()
    def noop(user_id, i): return i             @app.task
                                               def tracked_noop(user_id, i): return i

For each store (a fresh SQLite file; a private PostgreSQL schema, dropped at the end) and each
round, in the same run:

1. **Publish**: each task's N messages are split over two new queues of their own, each
   after W = 20 warm-up messages (``apply_async`` in this process; the tracked publish inserts
   the Pending status first). The N timed publishes give publish-side throughput (informative
   ratio). A fifth queue gets W + N of each task in alternating blocks of 20.
2. **Worker**: for each queue in turn — A B B A, where A is the untracked task in odd rounds
   and the tracked one in even rounds, so that a slow spell of a shared machine weighs on
   both alike; the mixed queue last — a real worker subprocess ``celery -A _celery_app worker
   --pool=solo -c 1 -Q <queue> --without-gossip --without-mingle --without-heartbeat`` drains
   it. ``task_prerun``/``task_postrun`` receivers (the same for both tasks) read
   ``time.perf_counter()`` in the worker; warm-up tasks are left out. The worker is then
   stopped (terminate, then kill; also on errors, Ctrl-C and SIGTERM), and every tracked
   status is checked to be Succeeded (the untracked task must leave none).

Worker throughput of one task = N / the sum, over its two runs, of (postrun of the last task -
prerun of the first timed one): the whole cycle of a task in the worker (fetch from Redis,
tracking, body, ack), without worker start-up, warm-up and shutdown. Ratio = tracked /
untracked tasks/s of the same round, median over rounds; this is the issue's measurement. The
mixed queue gives the same ratio
"paired": tasks/s of each kind = its tasks over the sum of their cycles (prerun to the next
prerun) in one worker run, so that both kinds meet the same load of the machine; on a shared
machine it varies far less between rounds. Both are judged against the targets from the issue:
>= 0.9 on SQLite and >= 0.8 on PostgreSQL (django-user-tasks measured 0.19 and 0.07). No result
backend is configured, so the untracked baseline is Celery at its fastest and the ratio is the
strictest one. The table also splits a task's cycle into prerun..postrun (tracking + body) and
the rest (ack, fetch, dispatch), and shows the time spent in garbage collection.

``--profile`` adds one more tracked run per store with the store instrumented (SQL statements
with ``before/after_cursor_execute``, transactions, pool checkouts, time in each store method,
time in ``Lifecycle.start``/``end``), on the publish side (this process) and the worker side; its
throughput is not comparable and is not reported. ``--cprofile DIR`` adds one more tracked run
whose worker dumps cProfile stats of the timed tasks to ``DIR/celery-worker-<store>.prof``.

    python benchmarks/celery_overhead.py [--backends sqlite,postgresql] [--quick] [-n N]
        [--rounds R] [--profile] [--cprofile DIR] [--plugin prometheus]

``--plugin prometheus`` measures everything again with the Prometheus plugin installed in the
publishing process and in the workers (multiprocess mode where the worker forks), and prints
the ratios without and with it.

N defaults to 2,000 (200 with ``--quick``), rounds to 5 (1 with ``--quick``). The broker is
``TASKSTATUS_BENCH_BROKER`` (default ``redis://127.0.0.1:6379/0``); PostgreSQL is
``TASKSTATUS_BENCH_POSTGRES`` as for the other benchmarks.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import celery
import redis
import sqlalchemy as sa
from _celery_app import StoreProfile, app, noop, tracked_noop
from _support import (
    OVERHEAD_TARGETS,
    add_common_arguments,
    add_plugin_argument,
    bench_tracker,
    install_plugin,
    machine,
    plugin_label,
    plugin_passes,
    print_table,
    run_main,
    server_version,
    source_revision,
    verdict,
)

import taskstatus
from taskstatus import State, Tracker

HERE = Path(__file__).resolve().parent
VARIANTS = ("untracked", "tracked")
WARMUP = 20
#: Tasks of one kind in a row in the paired (mixed) run.
BLOCK = 20
WORKER_STOP_SECONDS = 10.0


# -- one worker run ------------------------------------------------------------------------------
@dataclass
class WorkerRun:
    """``task_prerun``/``task_postrun`` clock readings of the timed tasks of one worker."""

    starts: list[float]
    ends: list[float]
    tracked: list[bool]
    #: Garbage collections meanwhile: (start, seconds, generation).
    collections: list[tuple[float, float, int]] = field(default_factory=list)
    profile: dict[str, Any] | None = None

    @property
    def per_second(self) -> float:
        """Tasks / (postrun of the last - prerun of the first)."""
        return len(self.starts) / (self.ends[-1] - self.starts[0])

    @property
    def body_seconds(self) -> float:
        """Mean prerun..postrun: tracking + task body."""
        return statistics.fmean(e - s for s, e in zip(self.starts, self.ends, strict=True))

    @property
    def between_seconds(self) -> float:
        """Mean postrun..next prerun: ack, fetch and dispatch."""
        return statistics.fmean(s - e for s, e in zip(self.starts[1:], self.ends, strict=False))

    def cycles(self, tracked: bool) -> list[tuple[float, float, float]]:
        """(prerun, postrun, next prerun) of each task of one kind but the last task."""
        return [
            (start, end, following)
            for start, end, following, kind in zip(
                self.starts, self.ends, self.starts[1:], self.tracked, strict=False
            )
            if kind is tracked
        ]

    def gc_seconds(self, tracked: bool | None = None) -> float:
        """Mean time in garbage collection per task (of one kind: collections that began in
        the cycle of a task of that kind, for a worker that ran both)."""
        if tracked is None:
            return sum(seconds for _, seconds, _ in self.collections) / len(self.starts)
        spent = 0.0
        for start, seconds, _ in self.collections:
            task = bisect.bisect_right(self.starts, start) - 1
            if 0 <= task < len(self.starts) - 1 and self.tracked[task] is tracked:
                spent += seconds
        return spent / len(self.cycles(tracked))

    def paired(self, tracked: bool) -> tuple[float, float, float]:
        """For a worker that ran both kinds in turn: tasks/s of one kind (its tasks over the
        sum of their cycles, prerun to the next prerun), mean prerun..postrun and mean
        postrun..next prerun."""
        cycles = self.cycles(tracked)
        return (
            len(cycles) / sum(following - start for start, _, following in cycles),
            statistics.fmean(end - start for start, end, _ in cycles),
            statistics.fmean(following - end for _, end, following in cycles),
        )


def _worker_command(queue: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "_celery_app",
        "worker",
        "--pool=solo",
        "-c",
        "1",
        "-Q",
        queue,
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "--loglevel=WARNING",
    ]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Warm shutdown (SIGTERM); SIGKILL if the worker is still there after a while."""
    try:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(WORKER_STOP_SECONDS)
    except subprocess.TimeoutExpired:
        pass
    finally:  # also when interrupted while waiting
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no worker log)"
    return "\n".join(text.splitlines()[-lines:])


def run_worker(
    queue: str,
    tasks: int,
    store_url: str,
    folder: Path,
    broker: str,
    *,
    skip: int = WARMUP,
    profile: bool = False,
    cprofile: Path | None = None,
) -> WorkerRun:
    """Start a solo worker on ``queue``, wait until it ran ``skip`` + ``tasks``, stop it."""
    tag = uuid.uuid4().hex[:8]
    timings = folder / f"timings-{tag}.json"
    log = folder / f"worker-{tag}.log"
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
        TASKSTATUS_BENCH_BROKER=broker,
        TS_BENCH_STORE=store_url,
        TS_BENCH_ARTIFACTS=str(folder / "artifacts"),
        TS_BENCH_SKIP=str(skip),
        TS_BENCH_EXPECTED=str(tasks),
        TS_BENCH_TIMINGS=str(timings),
        TS_BENCH_PROFILE="1" if profile else "0",
        TS_BENCH_CPROFILE=str(cprofile or ""),
    )
    deadline = time.monotonic() + 60 + tasks * 0.05
    with log.open("wb") as out:
        proc = subprocess.Popen(
            _worker_command(queue),
            cwd=HERE,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches this process only; it stops the worker
        )
        try:
            while not timings.exists():
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"worker on {queue} exited with {proc.returncode}:\n{_tail(log)}"
                    )
                if time.monotonic() > deadline:
                    raise RuntimeError(f"worker on {queue} did not finish in time:\n{_tail(log)}")
                time.sleep(0.02)
        finally:
            _stop(proc)
    data = json.loads(timings.read_text(encoding="utf-8"))
    run = WorkerRun(
        data["starts"],
        data["ends"],
        data["tracked"],
        [(start, seconds, gen) for start, seconds, gen in data["collections"]],
        data.get("profile"),
    )
    if not len(run.starts) == len(run.ends) == len(run.tracked) == tasks:
        raise RuntimeError(f"worker on {queue} timed {len(run.starts)} of {tasks} tasks")
    return run


# -- the broker ----------------------------------------------------------------------------------
def queue_length(client: redis.Redis, queue: str) -> int:
    return sum(int(client.llen(key)) for key in client.scan_iter(match=queue + "*", count=1000))


def drop_queue(client: redis.Redis, queue: str) -> None:
    """The queue's lists and kombu's binding sets (names are unique to this run)."""
    keys = list(client.scan_iter(match=f"*{queue}*", count=1000))
    if keys:
        client.delete(*keys)


def publish(task: Any, queue: str, user_id: int, count: int, start: int = 0) -> float:
    """Send ``count`` messages; seconds taken."""
    began = time.perf_counter()
    for i in range(start, start + count):
        task.apply_async((user_id, i), queue=queue)
    return time.perf_counter() - began


def publish_mixed(queue: str, user_id: int, count: int, tracked_first: bool) -> None:
    """``count`` messages of each task in alternating blocks of BLOCK, after WARMUP of each."""
    first, second = (tracked_noop, noop) if tracked_first else (noop, tracked_noop)
    publish(first, queue, user_id, WARMUP)
    publish(second, queue, user_id, WARMUP)
    for start in range(WARMUP, WARMUP + count, BLOCK):
        size = min(BLOCK, WARMUP + count - start)
        publish(first, queue, user_id, size, start)
        publish(second, queue, user_id, size, start)


# -- one store -----------------------------------------------------------------------------------
@dataclass
class Runs:
    """The worker runs of one task in one round, taken in turn with the other task's (A B B A),
    so that a slow spell of the machine weighs on both alike."""

    runs: list[WorkerRun]

    @property
    def per_second(self) -> float:
        """Tasks over the runs' summed timed spans."""
        tasks = sum(len(run.starts) for run in self.runs)
        return tasks / sum(run.ends[-1] - run.starts[0] for run in self.runs)

    @property
    def body_seconds(self) -> float:
        return statistics.fmean(run.body_seconds for run in self.runs)

    @property
    def between_seconds(self) -> float:
        return statistics.fmean(run.between_seconds for run in self.runs)

    def gc_seconds(self) -> float:
        return statistics.fmean(run.gc_seconds() for run in self.runs)


@dataclass
class Round:
    worker: dict[str, Runs]
    publish_seconds: dict[str, float]
    #: One worker that ran both tasks in alternating blocks.
    mixed: WorkerRun

    @property
    def ratio(self) -> float:
        return self.worker["tracked"].per_second / self.worker["untracked"].per_second

    @property
    def paired_ratio(self) -> float:
        return self.mixed.paired(True)[0] / self.mixed.paired(False)[0]

    @property
    def publish_ratio(self) -> float:
        return self.publish_seconds["untracked"] / self.publish_seconds["tracked"]


@dataclass
class StoreResult:
    backend: str
    server: str
    tasks: int
    rounds: list[Round] = field(default_factory=list)
    worker_profile: WorkerRun | None = None
    publish_profile: dict[str, Any] | None = None
    cprofile: Path | None = None
    #: The plugin on in the publisher and the workers (``--plugin``), if any.
    plugin: str | None = None

    @property
    def label(self) -> str:
        return plugin_label(self.backend, self.plugin)

    def paired(self, variant: str, what: int) -> float:
        """Median over rounds of ``WorkerRun.paired()[what]`` for ``variant``."""
        return statistics.median(r.mixed.paired(variant == "tracked")[what] for r in self.rounds)

    def median(self, variant: str, what: str) -> float:
        if what == "worker":
            return statistics.median(r.worker[variant].per_second for r in self.rounds)
        if what == "body":
            return statistics.median(r.worker[variant].body_seconds for r in self.rounds)
        if what == "between":
            return statistics.median(r.worker[variant].between_seconds for r in self.rounds)
        return statistics.median(self.tasks / r.publish_seconds[variant] for r in self.rounds)


@contextmanager
def default_tracker(tracker: Tracker) -> Iterator[Tracker]:
    """Make the default tracker (the one the Celery adapter uses) point at this run's store."""
    configured = taskstatus.configure(
        url=tracker.settings.url, artifact_storage=tracker.settings.artifact_storage
    )
    try:
        yield configured
    finally:
        configured.close()


def measure(
    backend: str,
    tasks: int,
    rounds: int,
    broker: str,
    *,
    profile: bool,
    cprofile_dir: Path | None,
) -> StoreResult:
    client = redis.Redis.from_url(broker)
    with (
        tempfile.TemporaryDirectory(prefix="taskstatus-celery-bench-") as tmp,
        bench_tracker(backend) as bench,
        default_tracker(bench) as tracker,
    ):
        folder = Path(tmp)
        store_url = tracker.settings.url
        result = StoreResult(backend, server_version(bench.store.engine), tasks)  # type: ignore[attr-defined]
        queues: list[str] = []
        try:
            for n in range(rounds):
                user_id = 1000 + n
                first, second = VARIANTS if n % 2 == 0 else tuple(reversed(VARIANTS))
                # A B B A: each task's N in two runs of N/2, taken in turn.
                order = [(first, 0), (second, 0), (second, 1), (first, 1)]
                names = {
                    run: f"ts-bench-{uuid.uuid4().hex[:12]}-{run[0]}-{run[1]}" for run in order
                }
                mixed_queue = f"ts-bench-{uuid.uuid4().hex[:12]}-mixed"
                queues += [*names.values(), mixed_queue]
                tasks_of = {"untracked": noop, "tracked": tracked_noop}
                halves = (tasks // 2, tasks - tasks // 2)
                published = dict.fromkeys(VARIANTS, 0.0)
                for (variant, half), queue in names.items():
                    task = tasks_of[variant]
                    publish(task, queue, user_id, WARMUP)  # warm-up: connection, queue, caches
                    published[variant] += publish(task, queue, user_id, halves[half], WARMUP)
                publish_mixed(mixed_queue, user_id + 500, tasks, tracked_first=n % 2 == 1)
                halves_run: dict[str, list[WorkerRun]] = {v: [] for v in VARIANTS}
                for (variant, half), queue in names.items():
                    halves_run[variant].append(
                        run_worker(queue, halves[half], store_url, folder, broker, skip=WARMUP)
                    )
                    left = queue_length(client, queue)
                    if left:
                        raise RuntimeError(f"{left} messages left in {queue}")
                mixed_run = run_worker(
                    mixed_queue, 2 * tasks, store_url, folder, broker, skip=2 * WARMUP
                )
                left = queue_length(client, mixed_queue)
                if left:
                    raise RuntimeError(f"{left} messages left in {mixed_queue}")
                runs = {v: Runs(halves_run[v]) for v in VARIANTS}
                _check_statuses(tracker, user_id, 2 * WARMUP + tasks)
                _check_statuses(tracker, user_id + 500, WARMUP + tasks)
                result.rounds.append(Round(runs, published, mixed_run))
                done = result.rounds[-1]
                print(
                    f"  {backend} round {n + 1}/{rounds}: "
                    + ", ".join(f"{v} {runs[v].per_second:,.0f} tasks/s" for v in VARIANTS)
                    + f", ratio {done.ratio:.3f}; paired in one worker: "
                    + ", ".join(
                        f"{v} {mixed_run.paired(v == 'tracked')[0]:,.0f} tasks/s" for v in VARIANTS
                    )
                    + f", ratio {done.paired_ratio:.3f}",
                    flush=True,
                )
            if profile:
                user_id = 2000
                queue = f"ts-bench-{uuid.uuid4().hex[:12]}-profile"
                queues.append(queue)
                publish(tracked_noop, queue, user_id, WARMUP)
                publish_profile = StoreProfile()
                publish_profile.attach(tracker)
                publish_profile.active = True
                publish(tracked_noop, queue, user_id, tasks, WARMUP)
                publish_profile.active = False
                result.publish_profile = publish_profile.as_dict()
                result.worker_profile = run_worker(
                    queue, tasks, store_url, folder, broker, profile=True
                )
                _check_statuses(tracker, user_id, WARMUP + tasks)
            if cprofile_dir is not None:  # a run of its own: cProfile slows every call
                user_id = 2001
                queue = f"ts-bench-{uuid.uuid4().hex[:12]}-cprofile"
                queues.append(queue)
                publish(tracked_noop, queue, user_id, WARMUP + tasks)
                cprofile_dir.mkdir(parents=True, exist_ok=True)
                result.cprofile = cprofile_dir / f"celery-worker-{backend}.prof"
                run_worker(queue, tasks, store_url, folder, broker, cprofile=result.cprofile)
                _check_statuses(tracker, user_id, WARMUP + tasks)
        finally:
            for queue in queues:
                drop_queue(client, queue)
            client.close()
        return result


def _check_statuses(tracker: Tracker, user_id: int, expected: int) -> None:
    """Every tracked task ended Succeeded; the untracked ones left no status."""
    done = tracker.count(user_id=user_id, state=State.SUCCEEDED)
    total = tracker.count(user_id=user_id)
    if done != expected or total != expected:
        raise RuntimeError(
            f"expected {expected} Succeeded statuses of owner {user_id}, "
            f"found {done} Succeeded of {total}"
        )


# -- report --------------------------------------------------------------------------------------
def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f}"


def report(results: list[StoreResult]) -> bool:
    rows: list[list[object]] = []
    publish_rows: list[list[object]] = []
    checks: list[bool] = []
    for r in results:
        target = OVERHEAD_TARGETS.get(r.backend)
        for paired, ratios in (
            (False, [x.ratio for x in r.rounds]),
            (True, [x.paired_ratio for x in r.rounds]),
        ):
            ratio = statistics.median(ratios)
            met = target is None or ratio >= target
            if target is not None:
                checks.append(met)
            spread = f"{min(ratios):.3f}..{max(ratios):.3f}" if len(ratios) > 1 else "-"
            for variant in VARIANTS:
                tracked = variant == "tracked"
                if paired:
                    rate, body, between = (r.paired(variant, i) for i in range(3))
                    collecting = statistics.median(x.mixed.gc_seconds(tracked) for x in r.rounds)
                else:
                    rate = r.median(variant, "worker")
                    body, between = r.median(variant, "body"), r.median(variant, "between")
                    collecting = statistics.median(x.worker[variant].gc_seconds() for x in r.rounds)
                judged = tracked and target is not None
                rows.append(
                    [
                        r.label,
                        f"{variant}, paired" if paired else variant,
                        f"{rate:,.0f}",
                        _us(1 / rate),
                        _us(body),
                        _us(between),
                        _us(collecting),
                        f"{ratio:.3f}" if tracked else "1",
                        spread if tracked else "",
                        f">= {target:g}" if judged else "",
                        verdict(met) if judged else "",
                    ]
                )
        publish_ratio = statistics.median(x.publish_ratio for x in r.rounds)
        for variant in VARIANTS:
            tracked = variant == "tracked"
            publish_rows.append(
                [
                    r.label,
                    variant,
                    f"{r.median(variant, 'publish'):,.0f}",
                    _us(1 / r.median(variant, "publish")),
                    f"{publish_ratio:.3f}" if tracked else "1",
                ]
            )
    rounds = len(results[0].rounds) if results else 0
    print_table(
        f"Worker throughput, N = {results[0].tasks:,} trivial tasks per run, one solo worker, "
        f"median of {rounds} round(s); us/task = 1 / tasks/s; prerun..postrun = tracking + "
        "body; between = ack + fetch + dispatch; gc = garbage collection (inside the two). "
        "'paired': one worker ran both tasks in "
        f"alternating blocks of {BLOCK} (tasks/s = tasks over their prerun-to-next-prerun "
        "cycles): the same comparison, much less sensitive to other load on the machine",
        [
            "store",
            "variant",
            "tasks/s",
            "us/task",
            "prerun..postrun us",
            "between us",
            "gc us",
            "ratio",
            "ratio range",
            "target",
            "result",
        ],
        rows,
    )
    print_table(
        "Publish side (informative): apply_async of N messages in one process; the tracked "
        "one also records the Pending status",
        ["store", "variant", "publishes/s", "us/publish", "ratio"],
        publish_rows,
    )
    for r in results:
        if r.worker_profile is not None and r.publish_profile is not None:
            report_profile(r)
        if r.cprofile is not None:
            print(f"\n{r.backend}: cProfile stats of a tracked worker run in {r.cprofile}")
    return all(checks)


def _statement_summary(profile: dict[str, Any], tasks: int) -> str:
    kinds = sorted(profile["statements"].items())
    return " + ".join(f"{n / tasks:.2f} {kind}" for kind, n in kinds) or "0"


def report_profile(r: StoreResult) -> None:
    assert r.worker_profile is not None
    assert r.publish_profile is not None
    n = r.tasks
    # From the paired runs: the estimate least disturbed by other load on the machine.
    overhead = 1 / r.paired("tracked", 0) - 1 / r.paired("untracked", 0)
    publish_overhead = 1 / r.median("tracked", "publish") - 1 / r.median("untracked", "publish")
    # pool_pre_ping: one more round trip per checkout
    pinged = bool(r.worker_profile.profile and r.worker_profile.profile.get("pre_ping"))
    rows: list[list[object]] = []
    calls: list[list[object]] = []
    for side, profile, measured in (
        ("publish", r.publish_profile, publish_overhead),
        ("worker", r.worker_profile.profile, overhead),
    ):
        assert profile is not None
        statements = sum(profile["statements"].values())
        commits = profile["commits"]
        checkouts = profile["checkouts"]
        round_trips = statements + 2 * commits + (checkouts if pinged else 0)
        hooks = sum(profile["hook_seconds"].values())
        rows.append(
            [
                side,
                f"{statements / n:.2f}",
                _statement_summary(profile, n),
                f"{commits / n:.2f}",
                f"{round_trips / n:.2f}",
                f"{profile['statement_seconds'] / max(1, statements) * 1e6:,.0f}",
                f"{profile['store_seconds'] / max(1, statements) * 1e6:,.0f}",
                f"{profile['store_seconds'] / n * 1e6:,.0f}",
                f"{hooks / n * 1e6:,.0f}" if hooks else "-",
                _us(measured),
            ]
        )
        for method, count in sorted(profile["calls"].items(), key=lambda kv: -kv[1]):
            seconds = profile["call_seconds"][method]
            calls.append([side, method, f"{count / n:.2f}", f"{seconds / count * 1e6:,.0f}"])
    print_table(
        f"{r.backend} profile ({r.server}), per tracked task, N = {n:,} (instrumented run): "
        "SQL = before_cursor_execute; round trips = statements + BEGIN/COMMIT"
        + (" + pool pre-ping" if pinged else "")
        + "; execute = cursor.execute only; store call = whole store method (statement build, "
        "pool, transaction); measured overhead = 1/tracked - 1/untracked tasks/s of the "
        "uninstrumented runs (worker: paired runs; publish: publish timings)",
        [
            "side",
            "SQL/task",
            "statements",
            "commits/task",
            "round trips/task",
            "us/execute",
            "us store call/stmt",
            "store us/task",
            "start+end us/task",
            "measured overhead us/task",
        ],
        rows,
    )
    print_table(
        f"{r.backend} store calls per tracked task",
        ["side", "store method", "calls/task", "us/call"],
        calls,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("-n", "--tasks", type=int, help="tasks per run (default 2000, quick 200)")
    parser.add_argument("--rounds", type=int, help="rounds per store (default 5, quick 1)")
    parser.add_argument("--profile", action="store_true", help="add an instrumented tracked run")
    parser.add_argument(
        "--cprofile", type=Path, help="one more tracked run, its worker's cProfile stats go here"
    )
    add_plugin_argument(parser)
    args = parser.parse_args()
    tasks = args.tasks or (200 if args.quick else 2000)
    rounds = args.rounds or (1 if args.quick else 5)
    if tasks < 2 or rounds < 1:
        parser.error("need at least 2 tasks and 1 round")
    broker = str(app.conf.broker_url)
    quick = " (quick)" if args.quick else ""
    print(
        f"Celery overhead benchmark of {source_revision()}: Python "
        f"{platform.python_version()}, Celery {celery.__version__}, SQLAlchemy {sa.__version__}, "
        f"N = {tasks:,} (+{WARMUP} warm-up) per run, {rounds} round(s){quick}; "
        f"broker {broker}; {machine()}",
        flush=True,
    )
    started = time.perf_counter()
    results = []
    for plugin in plugin_passes(args.plugin):
        install_plugin(plugin)
        for backend in args.backends:
            begun = time.perf_counter()
            result = measure(
                backend,
                tasks,
                rounds,
                broker,
                profile=args.profile,
                cprofile_dir=args.cprofile,
            )
            result.plugin = plugin
            print(
                f"  {result.label}: {result.server}, measured in "
                f"{time.perf_counter() - begun:.1f} s"
            )
            results.append(result)
    all_met = report(results)
    print(
        f"\nOverall: {'all targets met' if all_met else 'some targets MISSED'} "
        f"({time.perf_counter() - started:.0f} s); {machine()}"
    )


if __name__ == "__main__":
    run_main(main)
