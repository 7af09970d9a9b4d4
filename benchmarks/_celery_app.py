"""The Celery app that ``benchmarks/celery_overhead.py`` runs in a real solo worker.

The benchmark imports it to publish, and starts ``celery -A _celery_app worker`` on it with
the environment below. The two tasks are identical except that one is tracked.

* ``TASKSTATUS_BENCH_BROKER``: broker URL (default ``redis://127.0.0.1:6379/0``).
* ``TS_BENCH_STORE``, ``TS_BENCH_ARTIFACTS``: the taskstatus store of this run (worker only;
  the publishing process configures its own tracker).
* ``TS_BENCH_SKIP`` / ``TS_BENCH_EXPECTED``: warm-up tasks to leave out of the timings, then
  how many tasks to time.
* ``TS_BENCH_TIMINGS``: JSON file written once the last expected task has ended: the
  ``time.perf_counter()`` of every timed task's ``task_prerun`` and ``task_postrun``, which
  of them were tracked, and the garbage collections that ran meanwhile (``gc.callbacks``).
* ``TS_BENCH_PROFILE=1``: also count and time what the store does during the timed tasks
  (SQL statements, transactions, store calls); this slows the worker, so the throughput of
  such a run is not comparable.
* ``TS_BENCH_CPROFILE``: file to dump ``cProfile`` stats of the timed tasks to.

Timestamps are taken by ``task_prerun``/``task_postrun`` receivers, which cost the same for
both tasks; nothing is written until the last task has ended.
"""

from __future__ import annotations

import cProfile
import functools
import gc
import json
import os
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from _support import install_worker_plugin
from celery import Celery, signals

import taskstatus
import taskstatus.queues.celery as ts_celery

BROKER = os.environ.get("TASKSTATUS_BENCH_BROKER", "redis://127.0.0.1:6379/0")
app = Celery("taskstatus_bench", broker=BROKER)
app.conf.update(
    task_ignore_result=True,  # no result backend: the untracked baseline is Celery at its fastest
    broker_connection_retry_on_startup=True,
    worker_enable_remote_control=False,  # no pidbox traffic beside the measured queue
    worker_hijack_root_logger=False,
)
if os.environ.get("TS_BENCH_STORE"):
    taskstatus.configure(
        url=os.environ["TS_BENCH_STORE"],
        artifact_storage=os.environ.get("TS_BENCH_ARTIFACTS") or None,
    )
ts_celery.install(app)
install_worker_plugin()


@app.task  # type: ignore[untyped-decorator]
def noop(user_id: int, i: int) -> int:
    return i


@taskstatus.track()
@app.task  # type: ignore[untyped-decorator]
def tracked_noop(user_id: int, i: int) -> int:
    return i


TRACKED_NAME: str = tracked_noop.name


# -- worker-side timings -------------------------------------------------------------------------
class StoreProfile:
    """SQL statements and store calls of one worker process, attached to its tracker's store."""

    def __init__(self) -> None:
        self.statements: Counter[str] = Counter()
        self.statement_seconds = 0.0
        self.commits = 0
        self.checkouts = 0
        self.pre_ping = False
        self.calls: Counter[str] = Counter()
        self.call_seconds: defaultdict[str, float] = defaultdict(float)
        self.store_seconds = 0.0  # outermost store calls only
        self.hook_seconds: defaultdict[str, float] = defaultdict(float)
        self.active = False
        self._depth = 0
        self._started: list[float] = []

    def attach(self, tracker: taskstatus.Tracker) -> None:
        store = tracker.store
        engine: sa.Engine = store.engine  # type: ignore[attr-defined]
        self.pre_ping = bool(getattr(engine.pool, "_pre_ping", False))
        sa.event.listen(engine, "before_cursor_execute", self._before)
        sa.event.listen(engine, "after_cursor_execute", self._after)
        sa.event.listen(engine, "commit", self._commit)
        sa.event.listen(engine.pool, "checkout", self._checkout)
        for name in (
            "insert",
            "transition",
            "add_steps",
            "set_stage",
            "set_name",
            "seal",
            "add_artifact",
            "get",
            "get_by_task_id",
            "children",
            "ancestors",
            "child_states",
            "step_sums",
            "artifacts",
        ):
            if hasattr(store, name):
                setattr(store, name, self._timed_call(name, getattr(store, name)))
        lifecycle = tracker.lifecycle
        for name in ("start", "end"):
            setattr(lifecycle, name, self._timed_hook(name, getattr(lifecycle, name)))

    def _timed_call(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if not self.active:
                return method(*args, **kwargs)
            self._depth += 1
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                spent = time.perf_counter() - start
                self._depth -= 1
                self.calls[name] += 1
                self.call_seconds[name] += spent
                if self._depth == 0:
                    self.store_seconds += spent

        return timed

    def _timed_hook(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                if self.active:
                    self.hook_seconds[name] += time.perf_counter() - start

        return timed

    def _before(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if self.active:
            self.statements[statement.split(None, 1)[0].upper()] += 1
            self._started.append(time.perf_counter())

    def _after(self, *_args: Any) -> None:
        if self._started:
            self.statement_seconds += time.perf_counter() - self._started.pop()

    def _commit(self, *_args: Any) -> None:
        if self.active:
            self.commits += 1

    def _checkout(self, *_args: Any) -> None:
        if self.active:
            self.checkouts += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "statements": dict(self.statements),
            "statement_seconds": self.statement_seconds,
            "commits": self.commits,
            "checkouts": self.checkouts,
            "pre_ping": self.pre_ping,
            "calls": dict(self.calls),
            "call_seconds": dict(self.call_seconds),
            "store_seconds": self.store_seconds,
            "hook_seconds": dict(self.hook_seconds),
        }


class Timings:
    """``task_prerun``/``task_postrun`` clock readings, written out after the last task."""

    def __init__(self) -> None:
        self.skip = int(os.environ.get("TS_BENCH_SKIP", "0"))
        self.expected = int(os.environ.get("TS_BENCH_EXPECTED", "0"))
        self.path = os.environ.get("TS_BENCH_TIMINGS", "")
        self.seen = 0
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.tracked: list[bool] = []
        #: Garbage collections during the timed tasks: (start, seconds, generation).
        self.collections: list[tuple[float, float, int]] = []
        self._collecting = 0.0
        self.profile = StoreProfile() if os.environ.get("TS_BENCH_PROFILE") == "1" else None
        cprofile_path = os.environ.get("TS_BENCH_CPROFILE", "")
        self.cprofile_path = cprofile_path
        self.cprofile = cProfile.Profile() if cprofile_path else None

    def connect(self) -> None:
        if not self.path or not self.expected:
            return
        signals.task_prerun.connect(self.prerun, weak=False)
        signals.task_postrun.connect(self.postrun, weak=False)
        gc.callbacks.append(self.collection)
        if self.profile is not None:
            self.profile.attach(taskstatus.get_tracker())

    def collection(self, phase: str, info: dict[str, int]) -> None:
        if not self.starts or len(self.ends) == self.expected:
            return  # outside the timed tasks
        if phase == "start":
            self._collecting = time.perf_counter()
        elif self._collecting:
            spent = time.perf_counter() - self._collecting
            self.collections.append((self._collecting, spent, info["generation"]))
            self._collecting = 0.0

    def prerun(self, sender: Any = None, **_: Any) -> None:
        self.seen += 1
        if self.seen <= self.skip:
            return
        if self.seen == self.skip + 1:
            if self.profile is not None:
                self.profile.active = True
            if self.cprofile is not None:
                self.cprofile.enable()
        self.tracked.append(getattr(sender, "name", None) == TRACKED_NAME)
        self.starts.append(time.perf_counter())

    def postrun(self, **_: Any) -> None:
        if self.seen <= self.skip:
            return
        self.ends.append(time.perf_counter())
        if len(self.ends) == self.expected:
            if self.cprofile is not None:
                self.cprofile.disable()
                self.cprofile.dump_stats(self.cprofile_path)
            if self.profile is not None:
                self.profile.active = False
            self.write()

    def write(self) -> None:
        data: dict[str, Any] = {
            "pid": os.getpid(),
            "starts": self.starts,
            "ends": self.ends,
            "tracked": self.tracked,
            "collections": self.collections,
        }
        if self.profile is not None:
            data["profile"] = self.profile.as_dict()
        partial = f"{self.path}.partial"
        with open(partial, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(partial, self.path)  # the benchmark never sees a half-written file


Timings().connect()
