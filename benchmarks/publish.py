"""Publish-side cost of tracking: many tasks at once, and one task at a time, on each queue.

What is compared. Each queue's benchmark app defines two tasks that differ only in
``@taskstatus.track`` (``_celery_app.py``, ``_dramatiq_app.py``, ``_rq_jobs.py``), with the
queue's adapter installed, as in the worker overhead benchmarks. The untracked task goes
through the installed adapter, which lets it pass after a look-up of its tracking spec (a
dict read): what is measured is the cost of tracking a task, as a user who tracks some tasks
and not others pays it. Publishing the untracked task is the queue at its own speed (no
result backend), so the ratio is the strictest one.

What is measured: publish-side time only, in this process; no worker runs, and each run's
messages are purged from the broker (Redis) before the next (each variant has a private queue,
dropped at the end). For each store (a fresh SQLite file; a private PostgreSQL schema, dropped
at the end) and each queue:

* **Bulk**: a Celery ``group`` of N members, a Dramatiq ``group`` of N messages and a
  Dramatiq ``pipeline`` of ``min(N, 400)`` steps, an RQ ``Queue.enqueue_many`` of N jobs.
  The canvas/messages/job data are built first; the clock covers the publishing call only
  (``apply_async()``, ``run()``, ``enqueue_many()``), which for the tracked task also records
  every member Pending. Dramatiq cannot encode a deeper pipeline at Python's default recursion
  limit (each step carries the next one's message in its options: about 490 steps), so a
  2,000-step pipeline is not something a user can send. Each round publishes A B B A
  (A = untracked in odd rounds, tracked in even ones), so that a slow spell of a shared machine
  weighs on both; members/s of a variant = its 2 N members over its two runs' time. Ratio =
  tracked / untracked members/s of the round, median over rounds; target >= 0.9 on SQLite and
  PostgreSQL (issue 15). After each run the broker must hold every message and the store a
  Pending status for every tracked member (none for the untracked task). One more tracked
  run, untimed, counts the SQL statements and round trips it sends.
* **Single publishes**: a loop of ``delay()`` (``apply_async`` to the private queue) /
  ``send()`` / ``enqueue()`` calls, each timed on its own, S per variant per round in two runs
  of S / 2, A B B A. Reported: p50 and p99 of each variant's latencies (pooled over rounds),
  the extra latency of tracking at each percentile (tracked - untracked), and the ratio of
  publishes/s (median over rounds). No target: the issue asks for these numbers, documented.
* **The same loop inside** ``with taskstatus.batch():`` (one block per run of S / 2): the
  latency of each call inside the block, and publishes/s over the whole block including its
  end, where the collected records are written (and held messages sent).

    python benchmarks/publish.py [--backends sqlite,postgresql] [--queues celery,dramatiq,rq]
        [--quick] [-n N] [--singles S] [--rounds R]

N defaults to 2,000 (200 with ``--quick``), S to 1,000 (100), rounds to 5 (1). Brokers:
``TASKSTATUS_BENCH_BROKER`` for Celery, ``TASKSTATUS_BENCH_REDIS`` for Dramatiq and RQ (both
default ``redis://127.0.0.1:6379/0``); PostgreSQL is ``TASKSTATUS_BENCH_POSTGRES``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import redis
from _support import (
    Counts,
    StatementCounter,
    add_common_arguments,
    bench_tracker,
    machine,
    percentile,
    print_table,
    run_main,
    server_version,
    source_revision,
    verdict,
)

import taskstatus
from taskstatus import State, Tracker

QUEUES = ("celery", "dramatiq", "rq")
VARIANTS = ("untracked", "tracked")
#: Minimum tracked / untracked members/s of a bulk publish (issue 15; none for MySQL/MariaDB).
BULK_TARGETS = {"sqlite": 0.9, "postgresql": 0.9}
#: Deepest pipeline measured: Dramatiq's JSON encoding of deeper ones hits the recursion limit.
PIPELINE_STEPS = 400
WARMUP = 20
#: Dramatiq's and RQ's broker (Celery's: ``TASKSTATUS_BENCH_BROKER``, read by its app).
REDIS = os.environ.get("TASKSTATUS_BENCH_REDIS", "redis://127.0.0.1:6379/0")

#: Owner ids, one per run, so that each run's statuses are counted apart.
_owners = itertools.count(1000)


# -- the queues ----------------------------------------------------------------------------------
@dataclass
class Bulk:
    """One way of publishing many tasks: ``prepare(tracked, queue, owner, n)`` builds what to
    send and returns the call that sends it; ``messages(n)`` is how many messages it sends."""

    name: str
    prepare: Callable[[bool, str, int, int], Callable[[], object]]
    messages: Callable[[int], int]
    #: Statuses a tracked publish of n members records (its container included).
    statuses: Callable[[int], int]
    cap: int | None = None


@dataclass
class Publisher:
    """A queue's publishing calls, on private queues of this run, and their broker upkeep."""

    name: str
    bulks: list[Bulk]
    #: ``single(tracked, queue, owner)`` -> a call that publishes one task with argument i.
    single: Callable[[bool, str, int], Callable[[int], object]]
    #: Messages waiting in a private queue.
    length: Callable[[str], int]
    #: Empty a private queue (between runs) / remove all trace of it (at the end).
    purge: Callable[[str], None]
    drop: Callable[[str], None]
    broker: str


def _redis_keys_dropper(client: redis.Redis, pattern: str) -> Callable[[str], None]:
    def drop(queue: str) -> None:
        keys = list(client.scan_iter(match=pattern.format(queue=queue), count=1000))
        if keys:
            client.delete(*keys)

    return drop


def celery_queue() -> Publisher:
    import celery
    from _celery_app import app, noop, tracked_noop

    tasks = {False: noop, True: tracked_noop}
    client = redis.Redis.from_url(str(app.conf.broker_url))

    def group(tracked: bool, queue: str, owner: int, n: int) -> Callable[[], object]:
        task = tasks[tracked]
        members = celery.group(task.signature((owner, i), queue=queue) for i in range(n))
        send: Callable[[], object] = members.apply_async
        return send

    def single(tracked: bool, queue: str, owner: int) -> Callable[[int], object]:
        task = tasks[tracked]
        return lambda i: task.apply_async((owner, i), queue=queue)

    def length(queue: str) -> int:
        # The Redis transport keeps a queue in a list named after it (priorities: suffixes).
        return sum(int(client.llen(key)) for key in client.scan_iter(match=f"{queue}*"))

    return Publisher(
        "celery",
        [Bulk("group", group, messages=lambda n: n, statuses=lambda n: n + 1)],
        single,
        length,
        purge=_redis_keys_dropper(client, "{queue}*"),  # the messages; kombu's bindings stay
        drop=_redis_keys_dropper(client, "*{queue}*"),
        broker=str(app.conf.broker_url),
    )


def dramatiq_queue() -> Publisher:
    import _dramatiq_app
    import dramatiq

    actors = {False: _dramatiq_app.noop, True: _dramatiq_app.tracked_noop}
    broker = _dramatiq_app.broker
    client = broker.client

    def on(tracked: bool, queue: str) -> Any:
        """The actor of the variant, sending to ``queue`` (each variant has its own)."""
        actor = actors[tracked]
        if actor.queue_name != queue:
            actor.queue_name = queue
            broker.declare_actor(actor)
        return actor

    def group(tracked: bool, queue: str, owner: int, n: int) -> Callable[[], object]:
        actor = on(tracked, queue)
        messages = [actor.message(owner, i) for i in range(n)]
        return dramatiq.group(messages).run  # type: ignore[no-untyped-call]

    def pipeline(tracked: bool, queue: str, owner: int, n: int) -> Callable[[], object]:
        actor = on(tracked, queue)
        return dramatiq.pipeline(actor.message(owner, i) for i in range(n)).run

    def single(tracked: bool, queue: str, owner: int) -> Callable[[int], object]:
        actor = on(tracked, queue)
        return lambda i: actor.send(owner, i)

    return Publisher(
        "dramatiq",
        [
            Bulk("group", group, messages=lambda n: n, statuses=lambda n: n + 1),
            Bulk(
                "pipeline",
                pipeline,
                messages=lambda n: 1,  # the first step; workers send the others
                statuses=lambda n: n + 1,
                cap=PIPELINE_STEPS,
            ),
        ],
        single,
        length=lambda queue: int(client.llen(f"dramatiq:{queue}")),
        purge=broker.flush,
        drop=_redis_keys_dropper(client, "dramatiq:{queue}*"),
        broker=REDIS,
    )


def rq_queue() -> Publisher:
    import _rq_jobs
    import rq

    import taskstatus.queues.rq

    taskstatus.queues.rq.install()
    url = REDIS
    connection = redis.Redis.from_url(url)
    functions = {False: _rq_jobs.noop, True: _rq_jobs.tracked_noop}
    queues: dict[str, rq.Queue] = {}

    def queue_of(name: str) -> rq.Queue:
        if name not in queues:
            queues[name] = rq.Queue(name, connection=connection)
        return queues[name]

    def enqueue_many(tracked: bool, queue: str, owner: int, n: int) -> Callable[[], object]:
        function = functions[tracked]
        data = [rq.Queue.prepare_data(function, args=(owner, i)) for i in range(n)]
        target = queue_of(queue)
        return lambda: target.enqueue_many(data)

    def single(tracked: bool, queue: str, owner: int) -> Callable[[int], object]:
        function, target = functions[tracked], queue_of(queue)
        return lambda i: target.enqueue(function, owner, i)

    def drop(name: str) -> None:
        queue_of(name).delete(delete_jobs=True)

    return Publisher(
        "rq",
        [Bulk("enqueue_many", enqueue_many, messages=lambda n: n, statuses=lambda n: n)],
        single,
        length=lambda name: len(queue_of(name)),
        purge=lambda name: queue_of(name).empty(),  # type: ignore[no-untyped-call]
        drop=drop,
        broker=url,
    )


MAKERS: dict[str, Callable[[], Publisher]] = {
    "celery": celery_queue,
    "dramatiq": dramatiq_queue,
    "rq": rq_queue,
}


# -- measuring -----------------------------------------------------------------------------------
def abba(round_number: int) -> list[tuple[str, int]]:
    """(variant, half) in the order A B B A; A is the untracked variant in odd rounds."""
    first, second = VARIANTS if round_number % 2 == 0 else tuple(reversed(VARIANTS))
    return [(first, 0), (second, 0), (second, 1), (first, 1)]


@dataclass
class BulkResult:
    bulk: str
    members: int
    #: Seconds of each variant's runs, per round.
    seconds: list[dict[str, float]] = field(default_factory=list)
    #: What one tracked publish sent to the database (an extra, untimed run).
    counts: Counts = field(default_factory=Counts)

    def rate(self, variant: str) -> float:
        """Median over rounds of members/s (two runs per round)."""
        return statistics.median(2 * self.members / r[variant] for r in self.seconds)

    @property
    def ratios(self) -> list[float]:
        return [r["untracked"] / r["tracked"] for r in self.seconds]


@dataclass
class SingleResult:
    mode: str
    batched: bool
    latencies: dict[str, list[float]] = field(default_factory=lambda: {v: [] for v in VARIANTS})
    #: Publishes/s of each variant, per round.
    rates: list[dict[str, float]] = field(default_factory=list)
    #: Seconds per publish spent at the end of the batch() blocks, per round.
    ends: list[dict[str, float]] = field(default_factory=list)
    #: What a run of tracked publishes sent to the database (an extra, untimed run).
    counts: Counts = field(default_factory=Counts)
    counted: int = 1

    @property
    def ratios(self) -> list[float]:
        return [r["tracked"] / r["untracked"] for r in self.rates]


@dataclass
class QueueResult:
    queue: str
    backend: str
    bulks: list[BulkResult]
    singles: list[SingleResult]


class Run:
    """Publishing on one queue to one store: private queue names, checks after each run."""

    def __init__(self, queue: Publisher, tracker: Tracker) -> None:
        self.queue = queue
        self.tracker = tracker
        tag = uuid.uuid4().hex[:12]
        self.names = {v: f"ts-bench-publish-{tag}-{queue.name}-{v}" for v in VARIANTS}

    def check(self, variant: str, owner: int, messages: int, statuses: int) -> None:
        """The broker holds the run's messages and the store its Pending statuses; then the
        queue is emptied for the next run."""
        name = self.names[variant]
        waiting = self.queue.length(name)
        recorded = self.tracker.count(user_id=owner)
        pending = self.tracker.count(user_id=owner, state=State.PENDING)
        expected = statuses if variant == "tracked" else 0
        self.queue.purge(name)
        if waiting != messages or recorded != expected or pending != expected:
            raise RuntimeError(
                f"{self.queue.name} {variant}: {waiting} messages of {messages} in the broker, "
                f"{pending} Pending of {recorded} statuses of {expected} expected"
            )

    def bulk(
        self, bulk: Bulk, variant: str, n: int, counter: StatementCounter | None = None
    ) -> float:
        """Publish n members once: seconds taken by the publishing call (which ``counter``
        counts the SQL of, if given)."""
        owner = next(_owners)
        send = bulk.prepare(variant == "tracked", self.names[variant], owner, n)
        with counter or _nothing():
            began = time.perf_counter()
            send()
            seconds = time.perf_counter() - began
        self.check(variant, owner, bulk.messages(n), bulk.statuses(n))
        return seconds

    def singles(
        self, variant: str, count: int, batched: bool, counter: StatementCounter | None = None
    ) -> tuple[list[float], float]:
        """``count`` single publishes: each one's latency, and the whole loop's seconds
        (with ``batched``, inside one ``taskstatus.batch()`` block, its end included)."""
        owner = next(_owners)
        send = self.queue.single(variant == "tracked", self.names[variant], owner)
        latencies = []
        with counter or _nothing():
            began = time.perf_counter()
            with taskstatus.batch() if batched else _nothing():
                for i in range(count):
                    start = time.perf_counter()
                    send(i)
                    latencies.append(time.perf_counter() - start)
            total = time.perf_counter() - began
        self.check(variant, owner, count, count)
        return latencies, total

    def drop(self) -> None:
        for name in self.names.values():
            self.queue.drop(name)


@contextmanager
def _nothing() -> Iterator[object]:
    yield None


def measure(
    queue: Publisher, backend: str, tracker: Tracker, n: int, singles: int, rounds: int
) -> QueueResult:
    run = Run(queue, tracker)
    engine = tracker.store.engine  # type: ignore[attr-defined]
    result = QueueResult(queue.name, backend, [], [])
    try:
        for variant in VARIANTS:  # warm-up: connections, queue declarations, caches
            for bulk in queue.bulks:
                run.bulk(bulk, variant, WARMUP)
            run.singles(variant, WARMUP, batched=False)
            run.singles(variant, WARMUP, batched=True)
        for bulk in queue.bulks:
            members = min(n, bulk.cap or n)
            done = BulkResult(bulk.name, members)
            for r in range(rounds):
                seconds = dict.fromkeys(VARIANTS, 0.0)
                for variant, _ in abba(r):
                    seconds[variant] += run.bulk(bulk, variant, members)
                done.seconds.append(seconds)
                print(
                    f"  {queue.name} {bulk.name} / {backend} round {r + 1}/{rounds}: "
                    + ", ".join(f"{v} {2 * members / seconds[v]:,.0f} members/s" for v in VARIANTS)
                    + f", ratio {done.ratios[-1]:.3f}",
                    flush=True,
                )
            counter = StatementCounter(engine)
            run.bulk(bulk, "tracked", members, counter)
            done.counts = counter.counts
            result.bulks.append(done)
        halves = (singles // 2, singles - singles // 2)
        for mode, batched in (("single", False), ("in batch()", True)):
            single = SingleResult(mode, batched)
            for r in range(rounds):
                totals = dict.fromkeys(VARIANTS, 0.0)
                ends = dict.fromkeys(VARIANTS, 0.0)
                for variant, half in abba(r):
                    latencies, total = run.singles(variant, halves[half], batched)
                    single.latencies[variant] += latencies
                    totals[variant] += total
                    ends[variant] += total - sum(latencies)
                single.rates.append({v: singles / totals[v] for v in VARIANTS})
                single.ends.append({v: ends[v] / singles for v in VARIANTS})
                print(
                    f"  {queue.name} {mode} / {backend} round {r + 1}/{rounds}: "
                    + ", ".join(f"{v} {single.rates[-1][v]:,.0f} publishes/s" for v in VARIANTS)
                    + f", ratio {single.ratios[-1]:.3f}",
                    flush=True,
                )
            counter = StatementCounter(engine)
            run.singles("tracked", halves[0], batched, counter)
            single.counts, single.counted = counter.counts, halves[0]
            result.singles.append(single)
    finally:
        run.drop()
    return result


@contextmanager
def default_tracker(backend: str) -> Iterator[tuple[Tracker, str]]:
    """The default tracker (the one the adapters use) on a private database of ``backend``,
    and the server's version."""
    with bench_tracker(backend) as bench:
        configured = taskstatus.configure(
            url=bench.settings.url, artifact_storage=bench.settings.artifact_storage
        )
        try:
            yield configured, server_version(bench.store.engine)  # type: ignore[attr-defined]
        finally:
            configured.close()


# -- report --------------------------------------------------------------------------------------
def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f}"


def report(results: list[QueueResult], rounds: int) -> bool:
    bulk_rows: list[list[object]] = []
    checks: list[bool] = []
    for r in results:
        target = BULK_TARGETS.get(r.backend)
        for b in r.bulks:
            ratio = statistics.median(b.ratios)
            met = target is None or ratio >= target
            checks.append(met)
            untracked, tracked = b.rate("untracked"), b.rate("tracked")
            bulk_rows.append(
                [
                    f"{r.queue} {b.bulk}",
                    r.backend,
                    f"{b.members:,}",
                    f"{untracked:,.0f}",
                    f"{tracked:,.0f}",
                    f"{(1 / tracked - 1 / untracked) * 1e6:,.1f}",
                    f"{ratio:.3f}",
                    f"{min(b.ratios):.3f}..{max(b.ratios):.3f}" if len(b.ratios) > 1 else "-",
                    f"{b.counts.statements:,} / {b.counts.round_trips:,}",
                    f">= {target:g}" if target is not None else "",
                    verdict(met) if target is not None else "",
                ]
            )
    print_table(
        f"Bulk publish, publishing call only, median of {rounds} round(s) of A B B A; extra = "
        "1/tracked - 1/untracked members/s; SQL = statements / round trips (BEGIN and COMMIT "
        "included) of one tracked publish, counted in an extra, untimed run",
        [
            "publish",
            "store",
            "members",
            "untracked members/s",
            "tracked members/s",
            "extra us/member",
            "ratio",
            "ratio range",
            "SQL",
            "target",
            "result",
        ],
        bulk_rows,
    )
    single_rows: list[list[object]] = []
    for r in results:
        for s in r.singles:
            u, t = s.latencies["untracked"], s.latencies["tracked"]
            single_rows.append(
                [
                    r.queue,
                    s.mode,
                    r.backend,
                    f"{_us(percentile(u, 50))} / {_us(percentile(u, 99))}",
                    f"{_us(percentile(t, 50))} / {_us(percentile(t, 99))}",
                    f"{_us(percentile(t, 50) - percentile(u, 50))} / "
                    f"{_us(percentile(t, 99) - percentile(u, 99))}",
                    " / ".join(_us(statistics.median(e[v] for e in s.ends)) for v in VARIANTS)
                    if s.batched
                    else "-",
                    f"{statistics.median(x['untracked'] for x in s.rates):,.0f}",
                    f"{statistics.median(x['tracked'] for x in s.rates):,.0f}",
                    f"{statistics.median(s.ratios):.3f}",
                    f"{s.counts.round_trips / s.counted:.2f}",
                ]
            )
    print_table(
        "Single publishes, latency of each call in us (p50 / p99, all rounds pooled); extra = "
        "tracked - untracked at the same percentile; block end = us per publish spent leaving "
        "the batch() block (untracked / tracked); publishes/s and ratio: median over rounds, "
        "block ends included (informative, no target); round trips to the database per tracked "
        "publish, counted in an extra, untimed run",
        [
            "queue",
            "mode",
            "store",
            "untracked p50 / p99",
            "tracked p50 / p99",
            "extra p50 / p99",
            "block end",
            "untracked publishes/s",
            "tracked publishes/s",
            "ratio",
            "round trips/publish",
        ],
        single_rows,
    )
    return all(checks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument(
        "--queues", default=",".join(QUEUES), help=f"comma-separated, from {', '.join(QUEUES)}"
    )
    parser.add_argument("-n", "--members", type=int, help="members per bulk publish")
    parser.add_argument("--singles", type=int, help="single publishes per variant per round")
    parser.add_argument("--rounds", type=int, help="rounds (default 5, quick 1)")
    args = parser.parse_args()
    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    if not queues or any(q not in QUEUES for q in queues):
        parser.error(f"--queues takes names from {', '.join(QUEUES)}")
    n = args.members or (200 if args.quick else 2000)
    singles = args.singles or (100 if args.quick else 1000)
    rounds = args.rounds or (1 if args.quick else 5)
    if n < 2 or singles < 2 or rounds < 1:
        parser.error("need at least 2 members, 2 single publishes and 1 round")
    made = [MAKERS[name]() for name in queues]
    print(
        f"Publish benchmark of {source_revision()}: Python {platform.python_version()}, "
        f"N = {n:,} members per bulk publish (Dramatiq pipeline: {min(n, PIPELINE_STEPS):,} "
        f"steps), S = {singles:,} single publishes per variant, {rounds} round(s)"
        f"{' (quick)' if args.quick else ''}; "
        f"brokers {', '.join(f'{q.name} {q.broker}' for q in made)}; {machine()}",
        flush=True,
    )
    started = time.perf_counter()
    results = []
    for backend in args.backends:
        with default_tracker(backend) as (tracker, server):
            print(f"  {backend}: {server}", flush=True)
            for queue in made:
                results.append(measure(queue, backend, tracker, n, singles, rounds))
    all_met = report(results, rounds)
    print(
        f"\nOverall: {'all targets met' if all_met else 'some targets MISSED'} "
        f"({time.perf_counter() - started:.0f} s); {machine()}"
    )


if __name__ == "__main__":
    run_main(main)
