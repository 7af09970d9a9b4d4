"""Latency of the REST API's list endpoint on a large table, and of its live events, over real
HTTP.

Each backend gets a private database filled as by ``query.py`` (1,000,000 statuses of 10,000
owners; the fill is not measured). ``taskstatus serve`` then runs in a process of its own (one
uvicorn worker, as an operator would start it) and this process asks it, one request at a time:

* ``GET /api/v1/tasks/?user_id=<owner>&limit=50``: one owner's first page (target p99 <= 20 ms);
* the same with the ``next`` link of that page: the second page, by key;
* the dashboard's list page (``GET /``, HTML), everyone's newest tasks as the operator sees
  them and one owner's (target p95 <= 300 ms).

Baseline for the ratio: the same read through the library in this process,
``tracker.statuses(user_id=..., limit=51)`` (the API reads one row more to know whether a next
page exists), so the ratio is what HTTP, permissions and JSON add. Printed, not asserted.

Live events, on the same server: ``--sse-clients`` clients (default 200) each follow one running
task on ``GET /api/v1/tasks/{uuid}/events``. First, with every stream open and nothing written,
the server's CPU time over a quiet period, per client (what an open page costs). Then this
process writes a step to every task, round after round (1.2 s apart, so that few steps are
coalesced away: ``events`` counts those received), and each client notes when the event of each
step arrives: the latency from the start of the store write to the client (target p99 <= 1 s;
the server follows the store as ``taskstatus serve`` does, with one reader for all its streams:
PostgreSQL's NOTIFY, else a read every 0.25 s).

``--quick``: 50,000 rows / 500 owners, 300 requests, 20 event clients (unless
``--sse-clients``). ``--no-sse``: the list endpoint and page only. ``--backends`` also takes
``mysql``.

    python benchmarks/web.py [--backends sqlite,postgresql] [--quick] [--sse-clients 200]
                             [--no-sse]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import random
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from _support import (
    add_common_arguments,
    bench_tracker,
    machine,
    percentile,
    print_table,
    run_main,
    verdict,
)
from query import Plan, fill

from taskstatus import TaskEvent, TaskStatus, Tracker

TARGET_P99_MS = 20.0
TARGET_SSE_P99_MS = 1000.0
TARGET_PAGE_P95_MS = 300.0
#: Seconds between two rounds of steps: far longer than the server's store read interval and
#: a stream's coalescing interval, so that no step is coalesced into the next.
ROUND_PAUSE = 1.2
#: Seconds between the last stream's first event and the idle CPU measurement.
SETTLE = 3.0
TOKEN = "benchmark"
TASKSTATUS = Path(sys.executable).with_name("taskstatus")


@dataclass
class Timings:
    backend: str
    first_page: list[float] = field(default_factory=list)
    next_page: list[float] = field(default_factory=list)
    library: list[float] = field(default_factory=list)
    #: The dashboard's list page: every owner's (the operator's view), then one owner's.
    page_all: list[float] = field(default_factory=list)
    page_owner: list[float] = field(default_factory=list)
    #: Store write to client, per step event received.
    sse: list[float] = field(default_factory=list)
    sse_expected: int = 0
    sse_clients: int = 0
    #: The server's CPU seconds per second, for every open stream together, while quiet.
    idle_cpu: float = 0.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(tracker: Tracker, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKSTATUS_")}
    env.update(TASKSTATUS_URL=tracker.settings.url, TASKSTATUS_TOKEN=TOKEN)
    return subprocess.Popen(
        [str(TASKSTATUS), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _wait_listening(client: httpx.Client, url: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"taskstatus serve exited: {server.stderr.read().decode()}")  # type: ignore[union-attr]
        try:
            client.get(url)
            return
        except httpx.ConnectError:
            time.sleep(0.1)
    raise RuntimeError("taskstatus serve did not listen within 60 s")


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _running_tasks(tracker: Tracker, count: int) -> list[TaskStatus]:
    statuses = []
    for i in range(count):
        task = TaskEvent(task_id=f"sse-{i}", queue="bench", task_class="bench.follow")
        tracker.lifecycle.publish(
            TaskEvent(
                task_id=task.task_id,
                queue=task.queue,
                task_class=task.task_class,
                name=f"Followed {i}",
                user_id="sse",
                total_steps=10**6,
            )
        )
        tracker.lifecycle.start(task)
        statuses.append(tracker.get_by_task_id(task.task_id))
    return statuses


async def _follow_events(
    base: str,
    headers: dict[str, str],
    tracker: Tracker,
    statuses: list[TaskStatus],
    rounds: int,
    quiet: float,
    server_pid: int,
    timings: Timings,
) -> None:
    """Every client follows its task; quiet CPU first, then the rounds of writes."""
    written: dict[tuple[str, int], float] = {}
    opened = 0
    all_open = asyncio.Event()

    async def follow(http: httpx.AsyncClient, status: TaskStatus) -> None:
        nonlocal opened
        async with http.stream("GET", f"{base}tasks/{status.uuid}/events") as answer:
            answer.raise_for_status()
            async for line in answer.aiter_lines():
                if not line.startswith("data:"):
                    continue
                arrived = time.time()
                data = json.loads(line[5:])
                sent = written.get((data["uuid"], data["completed_steps"]))
                if sent is not None:
                    timings.sse.append(arrived - sent)
                elif data["completed_steps"] == 0:  # the first event: the stream is open
                    opened += 1
                    if opened == len(statuses):
                        all_open.set()

    def write_rounds() -> None:
        for step in range(1, rounds + 1):
            for status in statuses:
                written[(str(status.uuid), step)] = time.time()
                tracker.increment_steps(status, 1, 0)
            time.sleep(ROUND_PAUSE)
        time.sleep(2.0)  # the last round's events

    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(headers=headers, timeout=60, limits=limits) as http:
        clients = [asyncio.create_task(follow(http, s)) for s in statuses]
        try:
            await asyncio.wait_for(all_open.wait(), 120)
            # A stream joins the server's shared reader after its first event: not idle yet.
            await asyncio.sleep(SETTLE)
            before = _cpu_seconds(server_pid)
            await asyncio.sleep(quiet)
            timings.idle_cpu = (_cpu_seconds(server_pid) - before) / quiet
            await asyncio.to_thread(write_rounds)
        finally:
            for client in clients:
                client.cancel()
            await asyncio.gather(*clients, return_exceptions=True)
    timings.sse_expected = rounds * len(statuses)
    timings.sse_clients = len(statuses)


def measure(
    backend: str,
    rows: int,
    users: int,
    requests: int,
    seed: int,
    sse: tuple[int, int, float] | None,
) -> Timings:
    timings = Timings(backend)
    with bench_tracker(backend) as tracker:
        plan = Plan(rows, users)
        seconds = fill(tracker, plan, 20, seed)
        print(f"  {backend}: filled {rows:,} rows in {seconds:.1f} s", flush=True)
        port = _free_port()
        server = _serve(tracker, port)
        base = f"http://127.0.0.1:{port}/api/v1/tasks/"
        headers = {"Authorization": f"Bearer {TOKEN}"}
        rng = random.Random(seed + 2)
        owners = [str(1000 + rng.randrange(users)) for _ in range(requests)]
        try:
            with httpx.Client(headers=headers, timeout=30) as client:
                _wait_listening(client, base, server)
                for owner in owners[:20]:  # warm-up: pools, statement caches
                    client.get(base, params={"user_id": owner, "limit": 50})
                clock = time.perf_counter
                for owner in owners:
                    started = clock()
                    answer = client.get(base, params={"user_id": owner, "limit": 50})
                    timings.first_page.append(clock() - started)
                    page = answer.json()
                    assert len(page["results"]) == 50, answer.text[:300]
                    started = clock()
                    second = client.get(page["next"])
                    timings.next_page.append(clock() - started)
                    assert second.status_code == 200, second.text[:300]
                    started = clock()
                    tracker.statuses(user_id=owner, limit=51)
                    timings.library.append(clock() - started)
                page = f"http://127.0.0.1:{port}/"
                for owner in owners[: requests // 4]:
                    for params, found in (
                        ({}, timings.page_all),
                        ({"user_id": owner}, timings.page_owner),
                    ):
                        started = clock()
                        answer = client.get(page, params=params)
                        found.append(clock() - started)
                        assert answer.status_code == 200, answer.text[:300]
            if sse is None:
                return timings
            clients, rounds, quiet = sse
            statuses = _running_tasks(tracker, clients)
            asyncio.run(
                _follow_events(
                    f"http://127.0.0.1:{port}/api/v1/",
                    headers,
                    tracker,
                    statuses,
                    rounds,
                    quiet,
                    server.pid,
                    timings,
                )
            )
        finally:
            server.terminate()
            server.wait(timeout=30)
    return timings


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f}"


def report(results: list[Timings], rows: int) -> bool:
    table, checks = [], []
    for t in results:
        library50 = percentile(t.library, 50)
        for name, values in (("first page", t.first_page), ("next page", t.next_page)):
            p50, p99 = percentile(values, 50), percentile(values, 99)
            met = p99 * 1e3 <= TARGET_P99_MS
            table.append(
                [
                    t.backend,
                    name,
                    len(values),
                    _ms(p50),
                    _ms(p99),
                    _ms(library50),
                    f"{p50 / library50:.1f}",
                    f"<= {TARGET_P99_MS:g}",
                    verdict(met),
                ]
            )
            checks.append(met)
    print_table(
        f"GET /api/v1/tasks/?user_id=...&limit=50 on {rows:,} statuses over HTTP, one uvicorn "
        "worker, latency in ms (library = tracker.statuses(user_id, limit=51) in-process; "
        "ratio = HTTP p50 / library p50)",
        ["backend", "request", "n", "p50", "p99", "library p50", "ratio", "target p99", "result"],
        table,
    )
    table = []
    for t in results:
        for name, values in (("everyone's", t.page_all), ("one owner's", t.page_owner)):
            p50, p95 = percentile(values, 50), percentile(values, 95)
            met = p95 * 1e3 <= TARGET_PAGE_P95_MS
            table.append(
                [
                    t.backend,
                    name,
                    len(values),
                    _ms(p50),
                    _ms(p95),
                    f"<= {TARGET_PAGE_P95_MS:g}",
                    verdict(met),
                ]
            )
            checks.append(met)
    print_table(
        f"The dashboard's list page (GET /, 50 rows of HTML) on {rows:,} statuses, as the "
        "operator: everyone's newest tasks, and one owner's; latency in ms",
        ["backend", "list", "n", "p50", "p95", "target p95", "result"],
        table,
    )
    table = []
    for t in (t for t in results if t.sse_clients):
        p50, p99 = percentile(t.sse, 50), percentile(t.sse, 99)
        met = p99 * 1e3 <= TARGET_SSE_P99_MS
        table.append(
            [
                t.backend,
                t.sse_clients,
                f"{len(t.sse)}/{t.sse_expected}",
                _ms(p50),
                _ms(p99),
                f"<= {TARGET_SSE_P99_MS:g}",
                f"{t.idle_cpu * 100:.1f}",
                f"{t.idle_cpu * 100 / t.sse_clients:.3f}",
                verdict(met),
            ]
        )
        checks.append(met)
    if not table:
        return all(checks)
    print_table(
        "Live events: clients each following a running task on GET tasks/{uuid}/events; "
        "latency in ms from the start of a store write (this process) to the client; events = "
        "steps received / written (the rest coalesced into a newer step); idle CPU "
        "= the server's CPU time while every stream is open and nothing changes, in % of one "
        "core",
        [
            "backend",
            "clients",
            "events",
            "p50",
            "p99",
            "target p99",
            "idle CPU %",
            "per client %",
            "result",
        ],
        table,
    )
    return all(checks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--seed", type=int, default=20261130, help="random seed of the data")
    parser.add_argument(
        "--sse-clients", type=int, default=None, help="event clients (default 200, quick 20)"
    )
    parser.add_argument("--no-sse", action="store_true", help="the list endpoint only")
    args = parser.parse_args()
    rows, users, requests = (50_000, 500, 300) if args.quick else (1_000_000, 10_000, 2_000)
    clients = 0 if args.no_sse else args.sse_clients or (20 if args.quick else 200)
    # (clients, rounds of writes, seconds of quiet for the idle CPU)
    sse = None if args.no_sse else (clients, 3, 2.0) if args.quick else (clients, 10, 10.0)
    # What uvicorn picks ("auto") in the server process, which runs this interpreter.
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    print(
        f"taskstatus web benchmark: Python {platform.python_version()}, uvicorn with {http}, "
        f"{rows:,} statuses / {users:,} owners, {requests:,} requests, {clients} event clients"
        f"{' (quick)' if args.quick else ''}; "
        f"{machine()}",
        flush=True,
    )
    results = [measure(backend, rows, users, requests, args.seed, sse) for backend in args.backends]
    all_met = report(results, rows)
    print(f"\nOverall: {'all targets met' if all_met else 'some targets MISSED'}; {machine()}")


if __name__ == "__main__":
    run_main(main)
