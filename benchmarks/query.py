"""Read and purge latency of the SQL store on a large table.

Each backend gets a private database filled with 1,000,000 statuses of 10,000 owners (100
each) created over ~60 days: mostly Succeeded/Failed (with ``finished_at``; failures carry an
``Error`` text artifact), some Canceled, In Progress and Pending. The fill is test-data
generation, not measured: chunks of 10,000 rows go straight into the tables on a dedicated
driver connection (COPY on PostgreSQL, executemany elsewhere), already encoded the way the
``Uuid`` and ``UTCDateTime`` column types store them (about twice as fast as Core
``insert()``, whose per-value type processing dominated); picked rows are then read back
through the library to check the encoding. PostgreSQL gets VACUUM ANALYZE of the two tables
after the fill, as a table in service has had from autovacuum: otherwise the measured reads are
the first of freshly copied rows and set their hint bits (a page write each), no steady state.
MariaDB/MySQL get ANALYZE TABLE, for the same reason: the statistics of a table in service.

Measured, each over 2,000 random picks (p50 and p99):

* ``tracker.statuses(user_id=..., limit=50)``  target p50 <= 5 ms
* ``tracker.get(uuid)``                       target p50 <= 1 ms
* ``tracker.get_by_task_id(task_id)``         target p50 <= 1 ms

Baseline for the ratios: the same lookup as one raw ``text()`` statement through the same
engine and pool, autocommitted (no BEGIN/COMMIT: the least a lookup needs), timed in the same
run, alternating with the library call; the SQL each sends is counted in a separate pass.
Then ``tracker.purge(older_than=...)`` with the cut chosen so that half of the rows
(~500,000 finished ones) go, timed in statuses/s (targets: >= 25,000/s on SQLite, >= 50,000/s
on PostgreSQL). Meanwhile a worker process publishes, starts and succeeds tasks of its own
through the library, one write at a time: the worst and p99 latency of its writes that
overlapped the purge (target: worst <= 100 ms) and its "database is locked" errors (target: 0).
Its baseline is a plain batched ``DELETE ... WHERE id IN (...)`` (same batch size) over the
next ~50,000 finished rows, without the writer.

``--quick``: 50,000 rows / 500 owners, 500 picks. ``--backends`` also takes ``mysql``.

    python benchmarks/query.py [--backends sqlite,postgresql] [--quick]
"""

from __future__ import annotations

import argparse
import multiprocessing
import platform
import queue
import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from _support import (
    Counts,
    StatementCounter,
    add_common_arguments,
    bench_tracker,
    machine,
    percentile,
    print_table,
    run_main,
    verdict,
)

from taskstatus import Settings, State, TaskEvent, Tracker
from taskstatus.backends.tables import UTCDateTime, artifacts, statuses

CHUNK = 10_000
SPAN = timedelta(days=60)
TARGETS_MS = {"statuses(user_id, limit=50)": 5.0, "get(uuid)": 1.0, "get_by_task_id": 1.0}
TERMINAL = (State.SUCCEEDED.value, State.FAILED.value, State.CANCELED.value)
STATE_WEIGHTS = (
    (State.SUCCEEDED, 80),
    (State.FAILED, 12),
    (State.CANCELED, 3),
    (State.IN_PROGRESS, 3),
    (State.PENDING, 2),
)
TRACEBACK = 'Traceback (most recent call last):\n  File "tasks.py", line 42\nValueError: bad row\n'


# -- test data -----------------------------------------------------------------------------------
STATUS_COLUMNS = (
    "uuid", "task_id", "queue", "task_class", "name", "user_id", "parent_uuid", "is_container",
    "sealed", "state", "stage", "completed_steps", "total_steps", "planned_steps", "attempts",
    "traceback", "created", "modified", "started_at", "finished_at", "changed",
)  # fmt: skip
ARTIFACT_COLUMNS = ("uuid", "status_uuid", "name", "file", "url", "text", "created", "modified")
EPOCH = datetime(1970, 1, 1)
#: Version and variant bits of a random (version 4) UUID: MariaDB's UUID type checks them.
_V4_CLEAR = ~((0xF << 76) | (0x3 << 62)) & (2**128 - 1)
_V4_SET = (0x4 << 76) | (0x2 << 62)


@dataclass
class Plan:
    """What the fill produced that the measurements need."""

    rows: int
    users: int
    uuids: list[uuid.UUID] = field(default_factory=list)
    task_ids: list[str] = field(default_factory=list)
    #: Creation time of each picked status, to check that the fill stored what was meant.
    created: dict[uuid.UUID, datetime] = field(default_factory=dict)
    #: ``purge`` cut: exactly ``purge_expected`` finished rows were created before it.
    purge_before: datetime | None = None
    purge_expected: int = 0
    #: Cut of the raw-SQL purge baseline (the next band of finished rows).
    baseline_before: datetime | None = None
    baseline_expected: int = 0


Rows = list[tuple[Any, ...]]


def generate(plan: Plan, picks: int, seed: int) -> Iterator[tuple[Rows, Rows]]:
    """Chunks of (status rows, artifact rows), oldest first, ids in creation order.

    Values are already in the form the ``Uuid`` and ``UTCDateTime`` types store on SQLite,
    MariaDB and in PostgreSQL's COPY text input: 32 hex digits; naive UTC timestamps as
    ``YYYY-MM-DD HH:MM:SS.ffffff``.
    """
    rng = random.Random(seed)
    rows_total = plan.rows
    per_user = rows_total // plan.users
    owners = [str(1000 + u) for u in range(plan.users) for _ in range(per_user)]
    owners += [str(1000 + rng.randrange(plan.users)) for _ in range(rows_total - len(owners))]
    rng.shuffle(owners)
    picked = set(rng.sample(range(rows_total), min(picks, rows_total)))
    states = rng.choices(
        [s.value for s, _ in STATE_WEIGHTS], [w for _, w in STATE_WEIGHTS], k=rows_total
    )
    totals = rng.choices((1, 10, 100, 1000), k=rows_total)
    purge_target = rows_total // 2
    baseline_target = purge_target + rows_total // 20
    end_us = (datetime.now(timezone.utc).replace(tzinfo=None) - EPOCH) // timedelta(microseconds=1)
    end_us -= 3600 * 10**6
    span_us = SPAN // timedelta(microseconds=1)
    start_us = end_us - span_us
    spacing = span_us // rows_total
    finished = 0
    getrandbits, random_ = rng.getrandbits, rng.random
    succeeded, failed, pending = State.SUCCEEDED.value, State.FAILED.value, State.PENDING.value

    def stamp(us: int) -> str:
        return (EPOCH + timedelta(microseconds=us)).isoformat(" ", "microseconds")

    rows: Rows = []
    arts: Rows = []
    for i in range(rows_total):
        created = start_us + i * spacing + int(random_() * spacing / 2)
        state = states[i]
        total = totals[i]
        started = finished_at = None
        completed = 0
        if state != pending:
            started = created + int(random_() * 30e6)
            completed = int(random_() * total)
        if state in TERMINAL:
            finished_at = started + 10**6 + int(random_() * 600e6)  # type: ignore[operator]
            finished += 1
        if state == succeeded:
            completed = total
        hex_uuid = f"{getrandbits(128) & _V4_CLEAR | _V4_SET:032x}"
        task_id = f"{getrandbits(128):032x}"
        task_id = (
            f"{task_id[:8]}-{task_id[8:12]}-4{task_id[13:16]}-a{task_id[17:20]}-{task_id[20:]}"
        )
        if i in picked:
            plan.uuids.append(uuid.UUID(hex_uuid))
            plan.task_ids.append(task_id)
            plan.created[plan.uuids[-1]] = (EPOCH + timedelta(microseconds=created)).replace(
                tzinfo=timezone.utc
            )
        last = finished_at or started or created
        rows.append(
            (
                hex_uuid,
                task_id,
                "celery",
                "app.tasks.export_course",
                f"Export course {int(random_() * 5000)}",
                owners[i],
                None,
                False,
                True,
                state,
                None,
                completed,
                total,
                total,
                3 if state == failed and random_() < 0.1 else 1,
                TRACEBACK if state == failed else None,
                stamp(created),
                stamp(last),
                None if started is None else stamp(started),
                None if finished_at is None else stamp(finished_at),
                stamp(last),  # the change feed's stamp: as if written when last modified
            )
        )
        if state == failed:
            at = stamp(last)
            arts.append(
                (
                    f"{getrandbits(128) & _V4_CLEAR | _V4_SET:032x}",
                    hex_uuid,
                    "Error",
                    None,
                    None,
                    "ValueError: bad row",
                    at,
                    at,
                )
            )
        if finished == purge_target and plan.purge_before is None:
            plan.purge_before = EPOCH.replace(tzinfo=timezone.utc) + timedelta(
                microseconds=created + 1
            )
            plan.purge_expected = finished
        if finished == baseline_target and plan.baseline_before is None:
            plan.baseline_before = EPOCH.replace(tzinfo=timezone.utc) + timedelta(
                microseconds=created + 1
            )
            plan.baseline_expected = finished - purge_target
        if len(rows) == CHUNK:
            yield rows, arts
            rows, arts = [], []
    if rows:
        yield rows, arts


def fill(tracker: Tracker, plan: Plan, picks: int, seed: int) -> float:
    """Bulk-insert the test data on a dedicated driver connection; returns the seconds."""
    engine: sa.Engine = tracker.store.engine  # type: ignore[attr-defined]
    dialect = engine.dialect.name
    started = time.perf_counter()
    pooled = engine.raw_connection()
    raw: Any = pooled.driver_connection
    pooled.detach()  # closed for good below: the pragmas set here never reach the pool
    try:
        if dialect == "sqlite":
            raw.execute("PRAGMA cache_size=-262144")
            raw.execute("PRAGMA synchronous=OFF")
        for rows, arts in generated(plan, picks, seed):
            _insert(raw, dialect, statuses, STATUS_COLUMNS, rows)
            _insert(raw, dialect, artifacts, ARTIFACT_COLUMNS, arts)
            raw.commit()
        if dialect == "postgresql":
            raw.commit()
            raw.autocommit = True
            raw.execute(f"VACUUM ANALYZE {statuses.name}, {artifacts.name}")
        elif dialect in ("mysql", "mariadb"):
            # Statistics of the bulk load, as InnoDB's background sampling would have them by
            # now: without, MariaDB sorts every row for ORDER BY created DESC LIMIT 51.
            with raw.cursor() as cursor:
                cursor.execute(f"ANALYZE TABLE {statuses.name}, {artifacts.name}")
                cursor.fetchall()
    finally:
        pooled.close()
    seconds = time.perf_counter() - started
    check_fill(tracker, plan)
    return seconds


def _insert(raw: Any, dialect: str, table: sa.Table, given: tuple[str, ...], rows: Rows) -> None:
    """One chunk on the driver connection: COPY (PostgreSQL) or executemany."""
    if not rows:
        return
    columns, constants = _completed_columns(table, given)
    if constants:
        rows = [row + constants for row in rows]
    names = ", ".join(columns)
    if dialect == "postgresql":
        with raw.cursor() as cursor, cursor.copy(f"COPY {table.name} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        return
    mark = "?" if dialect == "sqlite" else "%s"
    cursor = raw.cursor()
    try:
        cursor.executemany(
            f"INSERT INTO {table.name} ({names}) VALUES ({', '.join([mark] * len(columns))})", rows
        )
    finally:
        cursor.close()


def _completed_columns(
    table: sa.Table, given: tuple[str, ...]
) -> tuple[list[str], tuple[Any, ...]]:
    """``given`` plus any required column added to the schema since this script was written,
    filled with its Python-side default (columns with a server default are left to it)."""
    columns, constants = list(given), []
    for column in table.columns:
        if column.name in given or column.primary_key:
            continue
        if column.nullable or column.server_default is not None:
            continue
        default = getattr(column.default, "arg", None)
        if column.default is None or callable(default):
            raise RuntimeError(f"the fill does not know how to set {table.name}.{column.name}")
        columns.append(column.name)
        constants.append(default)
    return columns, tuple(constants)


def _generate_into(channel: Any, plan: Plan, picks: int, seed: int) -> None:
    """Worker process: send the chunks, then the filled-in plan."""
    try:
        for chunk in generate(plan, picks, seed):
            channel.put(("chunk", chunk))
        channel.put(("plan", plan))
    except KeyboardInterrupt:
        pass
    except BaseException as exc:
        channel.put(("error", exc))


def generated(plan: Plan, picks: int, seed: int) -> Iterator[tuple[Rows, Rows]]:
    """The chunks of :func:`generate`, made in a worker process so that generating (Python)
    and inserting (the database) use both cores; fills in ``plan`` at the end."""
    context = multiprocessing.get_context("spawn")
    channel = context.Queue(maxsize=4)
    worker = context.Process(
        target=_generate_into, args=(channel, plan, picks, seed), name="bench-data", daemon=True
    )
    worker.start()
    try:
        while True:
            try:
                kind, value = channel.get(timeout=1)
            except queue.Empty:
                if worker.is_alive():
                    continue
                raise RuntimeError(
                    f"the data generator process died (exit code {worker.exitcode})"
                ) from None
            if kind == "error":
                raise value
            if kind == "plan":
                for name in ("uuids", "task_ids", "created"):
                    setattr(plan, name, getattr(value, name))
                plan.purge_before, plan.purge_expected = value.purge_before, value.purge_expected
                plan.baseline_before = value.baseline_before
                plan.baseline_expected = value.baseline_expected
                return
            yield value
    finally:
        worker.join(timeout=5)
        if worker.is_alive():
            worker.terminate()
            worker.join()


def check_fill(tracker: Tracker, plan: Plan) -> None:
    """Read picked rows back through the library: the fill must store what it meant to."""
    for key in plan.uuids[:20]:
        status = tracker.get(key)
        if status.created != plan.created[key] or tracker.get_by_task_id(status.task_id) != status:
            raise RuntimeError(f"the fill stored {status!r}, not what was generated")
    if tracker.count() != plan.rows:
        raise RuntimeError(f"the fill stored {tracker.count()} statuses, not {plan.rows}")


# -- lookups -------------------------------------------------------------------------------------
@dataclass
class Lookup:
    name: str
    library: list[float] = field(default_factory=list)
    raw: list[float] = field(default_factory=list)
    #: What one call sends, averaged over a separate counted pass (listeners cost time).
    library_sql: Counts = field(default_factory=Counts)
    raw_sql: Counts = field(default_factory=Counts)
    calls_counted: int = 0


def _raw_statements() -> dict[str, sa.TextClause]:
    table = statuses.name
    return {
        "statuses(user_id, limit=50)": sa.text(
            f"SELECT * FROM {table} WHERE user_id = :key ORDER BY created DESC, id DESC LIMIT 50"
        ),
        "get(uuid)": sa.text(f"SELECT * FROM {table} WHERE uuid = :key").bindparams(
            sa.bindparam("key", type_=sa.Uuid())
        ),
        "get_by_task_id": sa.text(f"SELECT * FROM {table} WHERE task_id = :key"),
    }


def measure_lookups(tracker: Tracker, plan: Plan, picks: int, seed: int) -> list[Lookup]:
    engine: sa.Engine = tracker.store.engine  # type: ignore[attr-defined]
    rng = random.Random(seed + 1)
    users = [str(1000 + rng.randrange(plan.users)) for _ in range(picks)]
    raw_sql = _raw_statements()
    # The least a lookup needs: one statement, no BEGIN/COMMIT, on the library's own pool.
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    def by_user(key: Any) -> None:
        found = tracker.statuses(user_id=key, limit=50)
        assert len(found) == 50
        assert {s.user_id for s in found} == {key}

    def by_uuid(key: Any) -> None:
        assert tracker.get(key).uuid == key

    def by_task_id(key: Any) -> None:
        assert tracker.get_by_task_id(key).task_id == key

    cases: list[tuple[str, Callable[[Any], None], list[Any]]] = [
        ("statuses(user_id, limit=50)", by_user, users),
        ("get(uuid)", by_uuid, list(plan.uuids)),
        ("get_by_task_id", by_task_id, list(plan.task_ids)),
    ]
    results = []
    for name, library_call, keys in cases:
        rng.shuffle(keys)
        statement = raw_sql[name]
        expected = 50 if name.startswith("statuses") else 1

        def raw_call(key: Any, statement: sa.TextClause = statement, n: int = expected) -> None:
            with autocommit.connect() as conn:
                assert len(conn.execute(statement, {"key": key}).all()) == n

        for key in keys[:20]:  # warm-up: pool, statement caches
            library_call(key)
            raw_call(key)
        lookup = Lookup(name)
        clock = time.perf_counter
        for n, key in enumerate(keys):
            # Alternate which one runs first, so that neither always finds a warmer cache.
            for which in (0, 1) if n % 2 else (1, 0):
                started = clock()
                if which:
                    library_call(key)
                    lookup.library.append(clock() - started)
                else:
                    raw_call(key)
                    lookup.raw.append(clock() - started)
        with StatementCounter(engine) as counter:
            for key in keys[:20]:
                before = counter.snapshot()
                library_call(key)
                middle = counter.snapshot()
                raw_call(key)
                lookup.library_sql += middle - before
                lookup.raw_sql += counter.snapshot() - middle
                lookup.calls_counted += 1
        results.append(lookup)
    return results


# -- purge ---------------------------------------------------------------------------------------
#: Purge targets: statuses/s (none given for MySQL/MariaDB), and a worker writing meanwhile.
PURGE_RATE_TARGETS = {"sqlite": 25_000, "postgresql": 50_000}
WORST_WRITE_TARGET_MS = 100.0


@dataclass
class Writes:
    """What a worker writing during the purge saw: each write's latency, its errors."""

    latencies: list[float] = field(default_factory=list)
    locked: int = 0
    failed: int = 0
    first_error: str = ""


@dataclass
class PurgeResult:
    deleted: int
    expected: int
    seconds: float
    statements: int
    round_trips: int
    writes: Writes
    baseline_deleted: int
    baseline_expected: int
    baseline_seconds: float


def _write_during(url: str, channel: Any, stop: Any) -> None:
    """Worker process: publish, start and succeed tasks of its own through the library, one
    write at a time (no write-behind batching), until told to stop; send what each write took
    (wall-clock start, seconds) and its errors ("database is locked" counted apart)."""
    tracker = Tracker(Settings(url=url, write_interval=0))
    timed: list[tuple[float, float]] = []
    writes = Writes()

    def write(call: Callable[..., Any], *args: Any) -> tuple[bool, Any]:
        at, started = time.time(), time.perf_counter()
        try:
            return True, call(*args)
        except Exception as exc:
            writes.first_error = writes.first_error or repr(exc)
            if "locked" in str(exc).lower():
                writes.locked += 1
            else:
                writes.failed += 1
            return False, None
        finally:
            timed.append((at, time.perf_counter() - started))

    try:
        tracker.open()
        lifecycle = tracker.lifecycle
        n = 0
        while not stop.is_set():
            n += 1
            event = TaskEvent(
                task_id=f"writer-{n}", queue="bench", task_class="benchmarks.query.writer"
            )
            if write(lifecycle.publish, replace(event, name="writer", user_id="1"))[0]:
                started, live = write(lifecycle.start, event)
                if started:
                    write(lifecycle.end, live)
            if n == 20:
                channel.put(("ready", None))
            time.sleep(0.002)  # a worker also runs its tasks between writes
        channel.put(("writes", (timed, writes)))
    except BaseException as exc:
        channel.put(("error", repr(exc)))
    finally:
        tracker.close()


def measure_purge(tracker: Tracker, plan: Plan) -> PurgeResult:
    engine: sa.Engine = tracker.store.engine  # type: ignore[attr-defined]
    assert plan.purge_before is not None
    assert plan.baseline_before is not None
    context = multiprocessing.get_context("spawn")
    channel, stop = context.Queue(), context.Event()
    writer = context.Process(
        target=_write_during, args=(tracker.settings.url, channel, stop), name="bench-writer"
    )
    writer.start()
    try:
        kind, value = channel.get(timeout=120)
        if kind != "ready":
            raise RuntimeError(f"the writer process failed: {value}")
        with StatementCounter(engine) as counter:
            began, started = time.time(), time.perf_counter()
            deleted = tracker.purge(older_than=datetime.now(timezone.utc) - plan.purge_before)
            seconds = time.perf_counter() - started
            ended = time.time()
        stop.set()
        kind, value = channel.get(timeout=120)
        if kind != "writes":
            raise RuntimeError(f"the writer process failed: {value}")
    finally:
        stop.set()
        writer.join(timeout=30)
        if writer.is_alive():
            writer.terminate()
    timed, writes = value
    # The writes that overlapped the purge: started during it, or still waiting when it began.
    writes.latencies = [took for at, took in timed if at <= ended and at + took >= began]
    started = time.perf_counter()
    baseline = _raw_purge(engine, plan.baseline_before, tracker.settings.purge_batch_size)
    baseline_seconds = time.perf_counter() - started
    return PurgeResult(
        deleted,
        plan.purge_expected,
        seconds,
        counter.counts.statements,
        counter.counts.round_trips,
        writes,
        baseline,
        plan.baseline_expected,
        baseline_seconds,
    )


def _raw_purge(engine: sa.Engine, before: datetime, batch: int) -> int:
    """The minimum a purge of flat statuses needs: batched deletes by primary key."""
    t = statuses.name
    select_ids = sa.text(
        f"SELECT id FROM {t} WHERE parent_uuid IS NULL AND state IN :states "
        f"AND created < :before AND id > :last ORDER BY id LIMIT :batch"
    ).bindparams(
        sa.bindparam("states", expanding=True),
        sa.bindparam("before", type_=UTCDateTime()),
    )
    delete_artifacts = sa.text(
        f"DELETE FROM {artifacts.name} WHERE status_uuid IN (SELECT uuid FROM {t} WHERE id IN :ids)"
    ).bindparams(sa.bindparam("ids", expanding=True))
    delete_statuses = sa.text(f"DELETE FROM {t} WHERE id IN :ids").bindparams(
        sa.bindparam("ids", expanding=True)
    )
    deleted = last = 0
    while True:
        with engine.begin() as conn:
            params = {"states": list(TERMINAL), "before": before, "last": last, "batch": batch}
            ids = list(conn.execute(select_ids, params).scalars())
            if not ids:
                return deleted
            last = ids[-1]
            conn.execute(delete_artifacts, {"ids": ids})
            deleted += conn.execute(delete_statuses, {"ids": ids}).rowcount


# -- one backend ---------------------------------------------------------------------------------
@dataclass
class BackendResult:
    backend: str
    server: str
    fill_seconds: float
    lookups: list[Lookup]
    purge: PurgeResult


def measure(backend: str, rows: int, users: int, picks: int, seed: int) -> BackendResult:
    with bench_tracker(backend) as tracker:
        engine: sa.Engine = tracker.store.engine  # type: ignore[attr-defined]
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                server = "SQLite " + str(conn.exec_driver_sql("select sqlite_version()").scalar())
            else:
                server = str(conn.exec_driver_sql("select version()").scalar()).split(" on ")[0]
        plan = Plan(rows, users)
        fill_seconds = fill(tracker, plan, picks, seed)
        print(f"  {backend}: {server}; filled {rows:,} rows in {fill_seconds:.1f} s", flush=True)
        started = time.perf_counter()
        lookups = measure_lookups(tracker, plan, picks, seed)
        print(f"  {backend}: lookups in {time.perf_counter() - started:.1f} s", flush=True)
        started = time.perf_counter()
        purge = measure_purge(tracker, plan)
        print(f"  {backend}: purge and its baseline in {time.perf_counter() - started:.1f} s")
        return BackendResult(backend, server, fill_seconds, lookups, purge)


# -- report --------------------------------------------------------------------------------------
def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}"


def report(results: list[BackendResult], rows: int) -> bool:
    lookup_rows: list[list[object]] = []
    checks: list[list[object]] = []
    for r in results:
        network = r.backend != "sqlite"
        for lookup in r.lookups:
            n = lookup.calls_counted
            lib_sql, raw_sql = lookup.library_sql, lookup.raw_sql
            sql = f"{lib_sql.statements / n:g} / {raw_sql.statements / n:g}"
            if network:
                sql += f" ({lib_sql.round_trips / n:g} / {raw_sql.round_trips / n:g})"
            p50, p99 = percentile(lookup.library, 50), percentile(lookup.library, 99)
            raw50, raw99 = percentile(lookup.raw, 50), percentile(lookup.raw, 99)
            target = TARGETS_MS[lookup.name]
            met = p50 * 1e3 <= target
            lookup_rows.append(
                [
                    r.backend,
                    lookup.name,
                    len(lookup.library),
                    _ms(p50),
                    _ms(p99),
                    _ms(raw50),
                    _ms(raw99),
                    f"{p50 / raw50:.2f}",
                    sql,
                    f"<= {target:g}",
                    verdict(met),
                ]
            )
            checks.append(
                [f"{r.backend}: {lookup.name} p50", f"{_ms(p50)} ms", f"<= {target:g} ms", met]
            )
    print_table(
        f"Lookups on {rows:,} statuses, latency in ms (raw = same lookup as one raw SQL "
        "statement, autocommitted, on the same engine; ratio = library p50 / raw p50; "
        "SQL/call = statements, library / raw, and (client/server) everything sent incl. "
        "BEGIN, COMMIT/ROLLBACK)",
        [
            "backend",
            "lookup",
            "picks",
            "p50",
            "p99",
            "raw p50",
            "raw p99",
            "ratio p50",
            "SQL/call",
            "target p50",
            "result",
        ],
        lookup_rows,
    )
    purge_rows = []
    for r in results:
        p, w = r.purge, r.purge.writes
        rate = p.deleted / p.seconds
        raw_rate = p.baseline_deleted / p.baseline_seconds if p.baseline_seconds else 0.0
        worst = max(w.latencies, default=0.0) * 1e3
        p99 = percentile(w.latencies, 99) * 1e3 if w.latencies else 0.0
        target = PURGE_RATE_TARGETS.get(r.backend)
        rate_met = target is None or rate >= target
        writes_met = bool(w.latencies) and worst <= WORST_WRITE_TARGET_MS
        errors_met = w.locked == 0 and w.failed == 0
        purge_rows.append(
            [
                r.backend,
                f"{p.deleted:,} ({p.expected:,})",
                f"{p.seconds:.2f}",
                f"{rate:,.0f}",
                "-" if target is None else f">= {target:,}",
                p.statements,
                p.round_trips,
                f"{raw_rate:,.0f}",
                len(w.latencies),
                f"{p99:.1f}",
                f"{worst:.1f}",
                f"{w.locked} / {w.failed}",
                verdict(rate_met and writes_met and errors_met and p.deleted == p.expected),
            ]
        )
        if target is not None:
            checks.append(
                [f"{r.backend}: purge", f"{rate:,.0f} statuses/s", f">= {target:,}/s", rate_met]
            )
        checks.append(
            [
                f"{r.backend}: worst write during purge",
                f"{worst:.1f} ms ({len(w.latencies)} writes)",
                f"<= {WORST_WRITE_TARGET_MS:g} ms",
                writes_met,
            ]
        )
        checks.append(
            [
                f"{r.backend}: writer errors during purge",
                f"{w.locked} locked, {w.failed} other"
                + (f" ({w.first_error})" if w.first_error else ""),
                "0",
                errors_met,
            ]
        )
        checks.append(
            [
                f"{r.backend}: purge deleted",
                f"{p.deleted:,}",
                f"{p.expected:,}",
                p.deleted == p.expected,
            ]
        )
    print_table(
        "purge(older_than=...) while a worker process writes (publish, start, succeed of its own "
        "tasks, one write at a time); raw = batched DELETE by id over the next band of finished "
        "rows, no writer; writes = the writer's writes that overlapped the purge",
        [
            "backend",
            "deleted (expected)",
            "seconds",
            "statuses/s",
            "target",
            "statements",
            "all SQL",
            "raw rows/s",
            "writes",
            "write p99 ms",
            "worst ms",
            "locked / other errors",
            "result",
        ],
        purge_rows,
    )
    print_table(
        "Fill (test-data generation, not measured against a target)",
        ["backend", "rows", "seconds", "rows/s"],
        [
            [r.backend, f"{rows:,}", f"{r.fill_seconds:.1f}", f"{rows / r.fill_seconds:,.0f}"]
            for r in results
        ],
    )
    print_table(
        "Targets",
        ["check", "measured", "target", "result"],
        [[name, value, target, verdict(bool(met))] for name, value, target, met in checks],
    )
    return all(bool(check[3]) for check in checks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--seed", type=int, default=20261124, help="random seed of the data")
    args = parser.parse_args()
    rows, users, picks = (50_000, 500, 500) if args.quick else (1_000_000, 10_000, 2_000)
    print(
        f"taskstatus query benchmark: Python {platform.python_version()}, "
        f"SQLAlchemy {sa.__version__}, {rows:,} statuses / {users:,} owners, {picks:,} picks"
        f"{' (quick)' if args.quick else ''}; {machine()}",
        flush=True,
    )
    results = []
    for backend in args.backends:
        started = time.perf_counter()
        results.append(measure(backend, rows, users, picks, args.seed))
        print(f"  {backend}: done in {time.perf_counter() - started:.1f} s", flush=True)
    all_met = report(results, rows)
    print(f"\nOverall: {'all targets met' if all_met else 'some targets MISSED'}; {machine()}")


if __name__ == "__main__":
    run_main(main)
