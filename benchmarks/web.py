"""Latency of the REST API's list endpoint on a large table, over real HTTP.

Each backend gets a private database filled as by ``query.py`` (1,000,000 statuses of 10,000
owners; the fill is not measured). ``taskstatus serve`` then runs in a process of its own (one
uvicorn worker, as an operator would start it) and this process asks it, one request at a time:

* ``GET /api/v1/tasks/?user_id=<owner>&limit=50``: one owner's first page (target p99 <= 20 ms);
* the same with the ``next`` link of that page: the second page, by key.

Baseline for the ratio: the same read through the library in this process,
``tracker.statuses(user_id=..., limit=51)`` (the API reads one row more to know whether a next
page exists), so the ratio is what HTTP, permissions and JSON add. Printed, not asserted.

Not measured yet: server-sent event clients (the events are not available yet).

``--quick``: 50,000 rows / 500 owners, 300 requests. ``--backends`` also takes ``mysql``.

    python benchmarks/web.py [--backends sqlite,postgresql] [--quick]
"""

from __future__ import annotations

import argparse
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

from taskstatus import Tracker

TARGET_P99_MS = 20.0
TOKEN = "benchmark"
TASKSTATUS = Path(sys.executable).with_name("taskstatus")


@dataclass
class Timings:
    backend: str
    first_page: list[float] = field(default_factory=list)
    next_page: list[float] = field(default_factory=list)
    library: list[float] = field(default_factory=list)


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


def measure(backend: str, rows: int, users: int, requests: int, seed: int) -> Timings:
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
    return all(checks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--seed", type=int, default=20261130, help="random seed of the data")
    args = parser.parse_args()
    rows, users, requests = (50_000, 500, 300) if args.quick else (1_000_000, 10_000, 2_000)
    print(
        f"taskstatus web benchmark: Python {platform.python_version()}, {rows:,} statuses / "
        f"{users:,} owners, {requests:,} requests{' (quick)' if args.quick else ''}; "
        f"{machine()}",
        flush=True,
    )
    results = [measure(backend, rows, users, requests, args.seed) for backend in args.backends]
    all_met = report(results, rows)
    print(f"\nOverall: {'all targets met' if all_met else 'some targets MISSED'}; {machine()}")


if __name__ == "__main__":
    run_main(main)
