"""Cost of progress reporting inside a running task, and the SQL it sends.

Measured on each backend inside a real task (published, begun and ended through the Tracker,
exactly as a queue adapter does), for N = 100,000 steps:

* tight loop: each step does trivial work (``total += i``); bare, then with
  ``status.increment_completed_steps()`` on the live handle (the documented pattern) and with
  ``taskstatus.current().increment_completed_steps()`` on every step. Overhead per call =
  (tracked - bare) / N; best of several repeats.
* realistic loop: each step also spins ~20 us on ``time.perf_counter`` (a ~2 s task), so the
  coalesced progress writes (one per ``progress_interval``, default 0.5 s) really happen. Its
  amortized cost per call = tight-loop overhead + time spent in those writes / N (the direct
  difference of two 2 s busy-wait runs is reported too, but is mostly scheduling noise).
* SQL statements reaching the engine (``before_cursor_execute`` on ``tracker.store.engine``):
  those of the handle's progress writes (including the final one in ``end``), and separately
  those of ``begin`` and of the rest of ``end``; statements per second of task run time.
  Also shown: everything sent (statements + BEGIN/COMMIT, + pool pre-ping where enabled).

Targets: <= 5 us per call amortized, on SQLite and PostgreSQL; <= 3 SQL statements per second
of task run time for 100,000 increments (judged on the realistic loop, whose run time is long
enough for a rate to mean something). Ratios are against the bare loops of the same run.

``--quick``: 3 tight repeats and 1 realistic run instead of 7 and 3. ``--backends`` also
takes ``mysql`` (MariaDB/MySQL).

    python benchmarks/progress.py [--backends sqlite,postgresql] [--quick]
"""

from __future__ import annotations

import argparse
import platform
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace

import sqlalchemy as sa
from _support import (
    Counts,
    StatementCounter,
    add_common_arguments,
    bench_tracker,
    machine,
    print_table,
    run_main,
    server_version,
    verdict,
)

import taskstatus
from taskstatus import LiveStatus, State, TaskEvent, Tracker

STEPS = 100_000
WORK_SECONDS = 20e-6
TARGET_OVERHEAD_US = 5.0
TARGET_STATEMENTS_PER_S = 3.0

Loop = Callable[[LiveStatus | None, int], float]


# -- the loops (each returns its own run time in seconds) ----------------------------------------
def bare_tight(_live: LiveStatus | None, steps: int) -> float:
    total = 0
    start = time.perf_counter()
    for i in range(steps):
        total += i
    return time.perf_counter() - start


def handle_tight(live: LiveStatus | None, steps: int) -> float:
    assert live is not None
    total = 0
    start = time.perf_counter()
    for i in range(steps):
        total += i
        live.increment_completed_steps()
    return time.perf_counter() - start


def current_tight(_live: LiveStatus | None, steps: int) -> float:
    total = 0
    start = time.perf_counter()
    for i in range(steps):
        total += i
        taskstatus.current().increment_completed_steps()
    return time.perf_counter() - start


def bare_work(_live: LiveStatus | None, steps: int) -> float:
    clock = time.perf_counter
    start = clock()
    for _ in range(steps):
        until = clock() + WORK_SECONDS
        while clock() < until:
            pass
    return clock() - start


def handle_work(live: LiveStatus | None, steps: int) -> float:
    assert live is not None
    clock = time.perf_counter
    start = clock()
    for _ in range(steps):
        until = clock() + WORK_SECONDS
        while clock() < until:
            pass
        live.increment_completed_steps()
    return clock() - start


# -- one tracked task ----------------------------------------------------------------------------
@dataclass
class TaskRun:
    loop_seconds: float
    task_seconds: float
    begin: Counts
    loop: Counts
    end: Counts
    #: What the live handle's progress writes (``flush``, including the final one) cost.
    progress: Counts
    progress_writes: int
    progress_seconds: float

    @property
    def whole(self) -> Counts:
        return self.begin + self.loop + self.end


def run_task(tracker: Tracker, counter: StatementCounter, loop: Loop, steps: int) -> TaskRun:
    """Publish, begin, run ``loop`` inside the task, end; count statements per phase."""
    task_id = f"bench-{uuid.uuid4()}"
    event = TaskEvent(task_id=task_id, queue="bench", task_class="benchmarks.progress")
    tracker.lifecycle.publish(replace(event, name=loop.__name__, user_id="7", total_steps=steps))
    before = counter.snapshot()
    start = time.perf_counter()
    live = tracker.lifecycle.start(event)
    begun = counter.snapshot()
    writes = _instrument_flush(live, counter)
    loop_seconds = loop(live, steps)
    looped = counter.snapshot()
    tracker.lifecycle.end(live)
    task_seconds = time.perf_counter() - start
    ended = counter.snapshot()
    status = tracker.get_by_task_id(task_id)
    if status.state is not State.SUCCEEDED or status.completed_steps != steps:
        raise RuntimeError(f"unexpected end of {task_id}: {status.state} {status.completed_steps}")
    return TaskRun(
        loop_seconds,
        task_seconds,
        begun - before,
        looped - begun,
        ended - looped,
        writes.counts,
        writes.writes,
        writes.seconds,
    )


@dataclass
class _Writes:
    counts: Counts
    writes: int = 0
    seconds: float = 0.0


def _instrument_flush(live: LiveStatus, counter: StatementCounter) -> _Writes:
    """Time and count the handle's progress writes (the hot path calls ``self.flush``)."""
    writes = _Writes(Counts())
    flush = live.flush

    def timed_flush(*, final: bool = True, force: bool = False, succeeding: bool = False) -> None:
        before = counter.snapshot()
        start = time.perf_counter()
        try:
            flush(final=final, force=force, succeeding=succeeding)
        finally:
            writes.seconds += time.perf_counter() - start
            spent = counter.snapshot() - before
            writes.writes += spent.statements > 0
            writes.counts += spent

    live.flush = timed_flush  # type: ignore[method-assign]
    return writes


def best(runs: list[TaskRun]) -> TaskRun:
    return min(runs, key=lambda r: r.loop_seconds)


# -- one backend ---------------------------------------------------------------------------------
@dataclass
class BackendResult:
    backend: str
    server: str
    bare_tight: float
    handle_tight: TaskRun
    current_tight: TaskRun
    bare_work: float
    handle_work: TaskRun


def measure(backend: str, tight_repeats: int, work_repeats: int) -> BackendResult:
    with bench_tracker(backend) as tracker:
        engine = tracker.store.engine  # type: ignore[attr-defined]
        server = server_version(engine)
        bare_t: list[float] = []
        handle_t: list[TaskRun] = []
        current_t: list[TaskRun] = []
        bare_w: list[float] = []
        handle_w: list[TaskRun] = []
        with StatementCounter(engine) as counter:
            run_task(tracker, counter, handle_tight, 1_000)  # warm-up: pool, caches
            for _ in range(tight_repeats):  # interleaved, so that noise hits all alike
                bare_t.append(bare_tight(None, STEPS))
                handle_t.append(run_task(tracker, counter, handle_tight, STEPS))
                current_t.append(run_task(tracker, counter, current_tight, STEPS))
            for _ in range(work_repeats):
                bare_w.append(bare_work(None, STEPS))
                handle_w.append(run_task(tracker, counter, handle_work, STEPS))
        return BackendResult(
            backend,
            server,
            min(bare_t),
            best(handle_t),
            best(current_t),
            min(bare_w),
            best(handle_w),
        )


# -- report --------------------------------------------------------------------------------------
def _us(seconds: float) -> str:
    return f"{seconds * 1e6:.3f}"


def report(results: list[BackendResult]) -> bool:
    cost_rows: list[list[object]] = []
    sql_rows: list[list[object]] = []
    notes: list[str] = []
    checks: list[tuple[str, str, str, bool]] = []

    def cost(
        backend: str, name: str, seconds: float, baseline: float, overhead: float | None, how: str
    ) -> None:
        met = overhead is None or overhead * 1e6 <= TARGET_OVERHEAD_US
        if overhead is not None:
            checks.append(
                (
                    f"{backend}: cost per call, {name}",
                    f"{_us(overhead)} us",
                    f"<= {TARGET_OVERHEAD_US:g} us",
                    met,
                )
            )
        cost_rows.append(
            [
                backend,
                name,
                f"{seconds:.4f}",
                _us(seconds / STEPS),
                f"{seconds / baseline:.2f}",
                "-" if overhead is None else _us(overhead),
                how,
                "" if overhead is None else verdict(met),
            ]
        )

    for r in results:
        b = r.backend
        hot = (r.handle_tight.loop_seconds - r.bare_tight) / STEPS
        cost(b, "tight, bare (baseline)", r.bare_tight, r.bare_tight, None, "")
        cost(
            b,
            "tight, status.increment_completed_steps()",
            r.handle_tight.loop_seconds,
            r.bare_tight,
            hot,
            "(tracked - bare) / N",
        )
        cost(
            b,
            "tight, current().increment_completed_steps()",
            r.current_tight.loop_seconds,
            r.bare_tight,
            (r.current_tight.loop_seconds - r.bare_tight) / STEPS,
            "(tracked - bare) / N",
        )
        work = r.handle_work
        cost(b, "~20 us work, bare (baseline)", r.bare_work, r.bare_work, None, "")
        cost(
            b,
            "~20 us work, status.increment_completed_steps()",
            work.loop_seconds,
            r.bare_work,
            hot + work.progress_seconds / STEPS,
            f"hot path + {work.progress_writes} writes ({work.progress_seconds * 1e3:.1f} ms) / N",
        )
        notes.append(
            f"{b}: ~20 us work loop, direct (tracked - bare) / N = "
            f"{_us((work.loop_seconds - r.bare_work) / STEPS)} us (two separate ~2 s busy-wait "
            f"runs: OS scheduling noise dominates this difference, hence the figure above)"
        )
        for name, run, judged in (
            ("tight, handle", r.handle_tight, False),
            ("tight, current()", r.current_tight, False),
            ("~20 us work, handle", r.handle_work, True),
        ):
            rate = run.progress.statements / run.task_seconds
            met = rate <= TARGET_STATEMENTS_PER_S
            if judged:
                checks.append(
                    (
                        f"{b}: SQL statements/s for {STEPS:,} increments (~2 s task)",
                        f"{rate:.2f}/s",
                        f"<= {TARGET_STATEMENTS_PER_S:g}/s",
                        met,
                    )
                )
            end_other = run.end - (run.progress - run.loop)
            sql_rows.append(
                [
                    b,
                    name,
                    f"{run.task_seconds:.3f}",
                    run.progress_writes,
                    run.progress.statements,
                    f"{rate:.2f}",
                    f"{run.progress.round_trips / run.task_seconds:.2f}",
                    run.begin.statements,
                    end_other.statements,
                    f"{run.whole.statements / run.task_seconds:.2f}",
                    f"<= {TARGET_STATEMENTS_PER_S:g}" if judged else "n/a (< 1 s)",
                    verdict(met) if judged else "",
                ]
            )
    print_table(
        f"Cost per increment_completed_steps() call, N = {STEPS:,} (best of repeats)",
        [
            "backend",
            "loop",
            "time (s)",
            "us/iteration",
            "vs bare",
            "us/call",
            "us/call is",
            "result",
        ],
        cost_rows,
    )
    for note in notes:
        print(f"  note: {note}")
    print_table(
        f"SQL for {STEPS:,} increments: progress = the handle's writes incl. the final one at "
        "end(); stmts = before_cursor_execute; all SQL = + BEGIN/COMMIT (+ pre-ping if on); "
        "rates per second of task run time (begin..end)",
        [
            "backend",
            "loop",
            "task s",
            "writes",
            "progress stmts",
            "stmts/s",
            "all SQL/s",
            "begin stmts",
            "end stmts (other)",
            "whole task stmts/s",
            "target/s",
            "result",
        ],
        sql_rows,
    )
    print_table(
        "Targets",
        ["check", "measured", "target", "result"],
        [[name, value, target, verdict(met)] for name, value, target, met in checks],
    )
    return all(met for *_, met in checks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    args = parser.parse_args()
    tight_repeats, work_repeats = (3, 1) if args.quick else (7, 3)
    print(
        f"taskstatus progress benchmark: Python {platform.python_version()}, "
        f"SQLAlchemy {sa.__version__}, progress_interval "
        f"{taskstatus.Settings().progress_interval} s, {STEPS:,} steps, "
        f"repeats {tight_repeats} tight / {work_repeats} with work"
        f"{' (quick)' if args.quick else ''}; {machine()}"
    )
    results = []
    for backend in args.backends:
        started = time.perf_counter()
        result = measure(backend, tight_repeats, work_repeats)
        print(f"  {backend}: {result.server}, measured in {time.perf_counter() - started:.1f} s")
        results.append(result)
    all_met = report(results)
    print(f"\nOverall: {'all targets met' if all_met else 'some targets MISSED'}; {machine()}")


if __name__ == "__main__":
    run_main(main)
