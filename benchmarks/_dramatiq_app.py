"""The Dramatiq actors that ``benchmarks/dramatiq_overhead.py`` runs in a real worker.

Two actors that differ only in tracking, each on a queue of its own. Environment:

* ``TASKSTATUS_BENCH_REDIS``: the broker (default ``redis://127.0.0.1:6379/0``).
* ``TS_BENCH_QUEUE``: suffix of this run's two queue names; with ``TS_BENCH_MIXED`` set, both
  actors share one queue (a paired run).
* ``TS_BENCH_STORE``, ``TS_BENCH_ARTIFACTS``: the taskstatus store (worker only).
* ``TS_BENCH_SKIP`` / ``TS_BENCH_EXPECTED``: warm-up messages to leave out of the timings,
  then how many to time; ``TS_BENCH_TIMINGS``: JSON file written once the last one has ended,
  with the ``time.perf_counter()`` of each timed message's start and end and its actor,
  taken by a middleware that costs the same for both actors.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

import dramatiq
from _support import install_worker_plugin
from dramatiq.brokers.redis import RedisBroker

import taskstatus
from taskstatus.queues.dramatiq import install

SUFFIX = os.environ.get("TS_BENCH_QUEUE", "bench")
MIXED = f"mixed-{SUFFIX}" if os.environ.get("TS_BENCH_MIXED") else None
broker = RedisBroker(url=os.environ.get("TASKSTATUS_BENCH_REDIS", "redis://127.0.0.1:6379/0"))
dramatiq.set_broker(broker)
if os.environ.get("TS_BENCH_STORE"):
    taskstatus.configure(
        url=os.environ["TS_BENCH_STORE"],
        artifact_storage=os.environ.get("TS_BENCH_ARTIFACTS") or None,
    )
install(broker)
install_worker_plugin()


@dramatiq.actor(queue_name=MIXED or f"untracked-{SUFFIX}", max_retries=0)
def noop(user_id: int, i: int) -> None:
    return None


@taskstatus.track()
@dramatiq.actor(queue_name=MIXED or f"tracked-{SUFFIX}", max_retries=0)
def tracked_noop(user_id: int, i: int) -> None:
    return None


class Timings(dramatiq.Middleware):  # type: ignore[misc]
    """Clock readings around each message (outermost: first before, last after), taken under
    a lock: the worker threads run these hooks concurrently."""

    def __init__(self) -> None:
        self.skip = int(os.environ.get("TS_BENCH_SKIP", "0"))
        self.expected = int(os.environ.get("TS_BENCH_EXPECTED", "0"))
        self.path = os.environ.get("TS_BENCH_TIMINGS", "")
        self.lock = threading.Lock()
        self.seen = 0
        self.timed: set[str] = set()
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.actors: list[str] = []

    def before_process_message(self, broker: Any, message: Any) -> None:
        with self.lock:
            self.seen += 1
            if self.seen > self.skip and len(self.starts) < self.expected:
                self.timed.add(message.message_id)
                self.starts.append(time.perf_counter())
                self.actors.append(message.actor_name)

    def after_process_message(self, broker: Any, message: Any, **_: Any) -> None:
        if not self.path:
            return
        with self.lock:
            if message.message_id not in self.timed:
                return
            self.ends.append(time.perf_counter())
            if len(self.ends) != self.expected:
                return
            partial = f"{self.path}.partial"
            with open(partial, "w", encoding="utf-8") as f:
                json.dump({"starts": self.starts, "ends": self.ends, "actors": self.actors}, f)
            os.replace(partial, self.path)


# Outermost: its before_* runs first and its after_* last.
broker.add_middleware(Timings(), before=type(broker.middleware[0]))
