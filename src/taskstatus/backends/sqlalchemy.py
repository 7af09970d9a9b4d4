"""The SQL store: SQLite, PostgreSQL (psycopg 3) and MariaDB/MySQL through SQLAlchemy 2 Core.

Every status change is a single conditional UPDATE compiled from the model's
:class:`~taskstatus.models.Transition`; counters are incremented in SQL, never read and written
back. Schema changes come only from the Alembic migrations shipped in
``taskstatus/migrations``: an empty database gets them on first use, an older one is refused
until ``taskstatus db upgrade``.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

from sqlalchemy import (
    BigInteger,
    ColumnClause,
    ColumnElement,
    Connection,
    CursorResult,
    Delete,
    Engine,
    Executable,
    Row,
    Select,
    String,
    Table,
    Update,
    Uuid,
    and_,
    any_,
    bindparam,
    case,
    column,
    create_engine,
    event,
    func,
    literal,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.visitors import InternalTraversal

from ..exceptions import ConfigurationError, StoreError, StoreUnavailable
from ..forking import reset_after_fork
from ..models import (
    ACTIVE_STATES,
    MAX_STEPS,
    TERMINAL_STATES,
    Artifact,
    Attempt,
    Attempts,
    State,
    Steps,
    TaskStatus,
    Transition,
)
from ..settings import hide_password
from ..store import (
    ANY,
    Change,
    ChangeSignal,
    EndedBatch,
    Position,
    StatusQuery,
    Summary,
    TaskKey,
    Times,
    per_task,
)
from . import migrate
from .base import BaseStore
from .bulk import BulkInsert
from .pacing import BatchPace
from .tables import DatabaseNow, UTCDateTime, artifacts, attempts, sqlite_text, statuses

__all__ = ["SQLAlchemyStore"]

log = logging.getLogger(__name__)

#: Default drivers when the URL names none.
_DRIVERS = {
    "postgresql": "psycopg",
    "postgres": "psycopg",
    "mysql": "pymysql",
    "mariadb": "pymysql",
}
SCHEMES = frozenset({"sqlite", *_DRIVERS})

_TERMINAL = [s.value for s in TERMINAL_STATES]
T = TypeVar("T")
_IN_CHUNK = 500  # bound parameters per IN (...) list
_INSERT_CHUNK = 500  # rows per multi-row INSERT (SQLite: ~20 parameters a row, 32,766 at most)
#: Seconds a purge transaction should last (SQLite: how long it locks the database), and how
#: long SQLite's database stays free between two of them (see taskstatus.backends.pacing).
_PURGE_BUDGET = 0.04
_SQLITE_PURGE_GAP = 0.03
_SQLITE_PURGE_CACHE_KIB = 128 * 1024
#: Connections a purge deletes on at once on a database server (SQLite: one).
_PURGE_LANES = 2
#: Up to this many tasks, a batched end returns the rows it wrote (see end_tasks): cheaper
#: than a second statement for those of them in a container, as acknowledgements make many
#: small batches.
_RETURNED_ROWS = 32
#: Tries of a statement (or a purge batch) that a deadlock with another writer undid.
_DEADLOCK_ATTEMPTS = 5
#: What the drivers report for a deadlock: MySQL/MariaDB error codes, PostgreSQL SQLSTATEs.
_MYSQL_DEADLOCKS = frozenset({1213})
_POSTGRESQL_DEADLOCKS = frozenset({"40P01"})


def normalize_url(url: str) -> URL:
    """Parse a store URL and pick taskstatus's default driver for the backend."""
    try:
        parsed = make_url(url)
    except (sa_exc.ArgumentError, ValueError) as exc:
        # A bad port is a ValueError; neither message repeats the password.
        raise ConfigurationError(f"invalid store URL {hide_password(url)!r}: {exc}") from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend not in SCHEMES:
        raise ConfigurationError(f"the SQL store does not handle {backend!r} URLs")
    if backend == "postgres":
        backend = "postgresql"
    if not driver and backend in _DRIVERS:
        driver = _DRIVERS[backend]
    return parsed.set(drivername=f"{backend}+{driver}" if driver else backend)


def _chunks(items: Sequence[T], size: int = _IN_CHUNK) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class SQLAlchemyStore(BaseStore):
    """A :class:`~taskstatus.store.Store` on any database SQLAlchemy 2 supports here: the
    :class:`~taskstatus.store.StoreCore` primitives, and SQL for every method of
    :class:`BaseStore` that SQL answers faster than the base's scans and reads-then-writes."""

    def __init__(self, url: str, **engine_options: Any) -> None:
        self.sa_url = normalize_url(url)
        self.url = self.sa_url.render_as_string(hide_password=True)
        self.dialect = self.sa_url.get_backend_name()
        self._engine_options = engine_options
        self._engine: Engine | None = None
        self._autocommit_engine: Engine | None = None
        self._transitions: dict[Transition, Update] = {}
        self._task_transitions: dict[tuple[Transition, str, _Stamps], Update] = {}
        #: How a batched transition names its tasks (see _Stamps); MySQL locks and uses CASE.
        self._stamp_form = "json" if self.dialect == "sqlite" else "values"
        self._queries: dict[tuple[object, ...], Select[Any]] = {}
        self._bulk: BulkInsert | None = None
        self._lock = threading.RLock()
        self._opened = False
        self._listener: _Listener | None = None
        # A pooled connection must never be used by two processes: drop the pool in a child.
        reset_after_fork(self, SQLAlchemyStore._after_fork)

    @property
    def database_file(self) -> Path | None:
        """The file of a SQLite database, which connecting creates when it is missing; None
        for a server, an in-memory database or a ``file:`` URI."""
        database = self.sa_url.database or ""
        if self.dialect != "sqlite" or database in ("", ":memory:") or database.startswith("file:"):
            return None
        return Path(database).absolute()

    # -- lifecycle ---------------------------------------------------------------------------
    def _make_engine(self) -> Engine:
        options: dict[str, Any] = {"future": True}
        if self.dialect == "sqlite":
            database = self.sa_url.database or ""
            if database in ("", ":memory:") or database.startswith("file::memory:"):
                options.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
            else:
                options["connect_args"] = {"timeout": 30, "check_same_thread": False}
        else:
            # No pre-ping (a round trip per checkout): a dropped connection is detected when
            # used, invalidated by the pool and the statement retried once (see _run).
            options.update(pool_recycle=3600)
            if self.dialect == "postgresql":
                options["connect_args"] = {
                    "connect_timeout": 10,
                    "options": _postgres_options(self.sa_url),
                }
            else:
                options["connect_args"] = {"connect_timeout": 10, "charset": "utf8mb4"}
        options.update(self._engine_options)
        try:
            engine = create_engine(self.sa_url, **options)
        except sa_exc.NoSuchModuleError:
            raise ConfigurationError(
                f"unknown database driver {self.sa_url.drivername!r} in the store URL "
                f"{self.url!r}; leave it out for the default ({', '.join(sorted(_DRIVERS))}: "
                f"{', '.join(sorted(set(_DRIVERS.values())))})"
            ) from None
        except ModuleNotFoundError as exc:
            extra = {"postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql"}
            raise ConfigurationError(
                f"the {self.dialect} store needs the driver {exc.name!r}: "
                f"install the extra {extra.get(self.dialect, 'all')!r} (from a clone: "
                f"pip install -e '.[{extra.get(self.dialect, 'all')}]')"
            ) from exc
        if self.dialect == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
        return engine

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    self._engine = self._make_engine()
        return self._engine

    def _after_fork(self) -> None:
        self._listener = None  # its thread and connection stayed in the parent
        if self._engine is not None:
            self._engine.dispose(close=False)

    def open(self) -> None:
        """Connect, create the schema on an empty database, refuse an outdated one."""
        if self._opened:
            return
        with self._lock:
            if self._opened:
                return
            try:
                migrate.ensure_schema(self.engine)
            except sa_exc.OperationalError as exc:
                raise StoreUnavailable(
                    f"cannot reach the database at {self.url}: {_reason(exc)}"
                ) from exc
            except sa_exc.DBAPIError as exc:
                raise StoreError(f"cannot use the database at {self.url}: {_reason(exc)}") from exc
            self._opened = True

    def close(self) -> None:
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
            self._autocommit_engine = None
        self._opened = False

    @contextmanager
    def _begin(self) -> Iterator[Connection]:
        """A transaction, for work of several statements."""
        with self._errors(), self.engine.begin() as conn:
            yield conn

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """The database's errors as the store's (the store opened first)."""
        self.open()
        try:
            yield
        except sa_exc.OperationalError as exc:
            raise StoreUnavailable(f"database error at {self.url}: {_reason(exc)}") from exc
        except sa_exc.IntegrityError:
            raise  # the caller tells a duplicate from a missing row
        except sa_exc.StatementError as exc:
            raise self._refused(exc) from exc

    def _run(
        self,
        stmt: Executable,
        params: Mapping[str, Any] | None,
        use: Callable[[CursorResult[Any]], T],
    ) -> T:
        """One statement on its own, autocommitted (no BEGIN/COMMIT round trips); ``use``
        reads the result while the connection is still this thread's."""
        self.open()
        for attempt in range(1, _DEADLOCK_ATTEMPTS + 1):
            try:
                with self._autocommit.connect() as conn:
                    return use(conn.execute(stmt, params))
            except sa_exc.DBAPIError as exc:
                if exc.connection_invalidated and attempt == 1:
                    continue  # the server dropped a pooled connection: once more, fresh
                if _deadlocked(exc) and attempt < _DEADLOCK_ATTEMPTS:
                    time.sleep(0.005 * attempt)  # the statement was undone: run it again
                    continue
                if isinstance(exc, sa_exc.OperationalError):
                    raise StoreUnavailable(f"database error at {self.url}: {_reason(exc)}") from exc
                if isinstance(exc, sa_exc.IntegrityError):
                    raise  # the caller tells a duplicate from a missing row
                raise self._refused(exc) from exc
            except sa_exc.StatementError as exc:
                raise self._refused(exc) from exc
        raise AssertionError("unreachable")

    def _refused(self, exc: sa_exc.StatementError) -> StoreError:
        """A statement the database refused, as an error whose text names neither the
        statement nor its parameters (it may reach an owner); those go to the log."""
        log.error("the database at %s refused a statement: %s", self.url, exc)
        return StoreError(
            f"the database refused a statement ({type(exc).__name__}); the log has the details"
        )

    @property
    def _autocommit(self) -> Engine:
        engine = self._autocommit_engine
        if engine is None or engine.pool is not self.engine.pool:
            engine = self._autocommit_engine = self.engine.execution_options(
                isolation_level="AUTOCOMMIT"
            )
        return engine

    # -- writes ------------------------------------------------------------------------------
    def insert(self, status: TaskStatus) -> bool:
        try:
            self._run(_INSERT_STATUS, _status_values(status), _rowcount)
        except sa_exc.IntegrityError as exc:
            if self.get_by_task_id(status.task_id) is not None:
                return False
            raise StoreError(f"cannot record task {status.task_id!r}: {_reason(exc)}") from exc
        return True

    def insert_many(self, statuses: Sequence[TaskStatus]) -> bool:
        if not statuses:
            return True
        try:
            # One transaction, one multi-row INSERT per chunk.
            bulk = self._bulk_insert()
            with self._begin() as conn:
                for chunk in _chunks(statuses, _INSERT_CHUNK):
                    if bulk is None:
                        conn.execute(_INSERT_STATUS, [_status_values(status) for status in chunk])
                    else:
                        parameters = bulk.parameters(_status_columns(chunk))
                        conn.exec_driver_sql(bulk.statement(len(chunk)), parameters)
        except sa_exc.IntegrityError as exc:
            with self._begin() as conn:
                for ids in _chunks([status.task_id for status in statuses]):
                    if conn.execute(select(_c.task_id).where(_c.task_id.in_(ids))).first():
                        return False
            raise StoreError(
                f"cannot record {len(statuses)} tasks ({statuses[0].task_id!r}...): {_reason(exc)}"
            ) from exc
        return True

    def _bulk_insert(self) -> BulkInsert | None:
        """The multi-row INSERT of statuses for this database's driver (None: a driver of
        another parameter style, which takes SQLAlchemy's executemany)."""
        if self._bulk is None and BulkInsert.supports(self.engine.dialect):
            self._bulk = BulkInsert(
                statuses,
                _STATUS_FIELDS,
                {"changed": DatabaseNow(), "version": literal_column("1")},
                self.engine.dialect,
            )
        return self._bulk

    def update(
        self,
        uuid: UUID,
        change: Callable[[TaskStatus], TaskStatus | None],
        *,
        artifact: Artifact | None = None,
        shown: bool = True,
    ) -> TaskStatus | None:
        """The primitive of a read and a write under a row lock; this store's own writes are
        single conditional statements instead, and use it nowhere."""
        with self._begin() as conn:
            # A write that changes nothing locks the row (SQLite: the database) before the
            # read, so that no other write comes between the read and the write.
            conn.execute(_LOCK_ROW, {"p_uuid": uuid})
            row = conn.execute(_BY_UUID, {"p_uuid": uuid}).first()
            new = None if row is None else change(_status(row._mapping))
            if new is None:
                return None
            values: dict[str, Any] = _status_values(new)
            del values["uuid"]  # the key, referenced by the children
            if not shown:  # not a change a follower is shown, as a heartbeat
                values.update(changed=_c.changed, version=_c.version)
            conn.execute(update(statuses).where(_c.uuid == uuid).values(values))
            if artifact is not None:
                conn.execute(artifacts.insert().values(**_artifact_values(artifact)))
        return new

    def _transition_by_uuid(self, transition: Transition) -> Update:
        stmt = self._transitions.get(transition)
        if stmt is None:
            stmt = self._transitions[transition] = _transition_statement(
                transition, _c.uuid == bindparam("p_uuid")
            )
        return stmt

    def transition(
        self,
        uuid: UUID,
        transition: Transition,
        now: datetime,
        *,
        traceback: str | None = None,
        artifact: Artifact | None = None,
    ) -> bool:
        stmt = self._transition_by_uuid(transition)
        params = {"p_uuid": uuid, "p_now": now}
        if traceback is None and artifact is None:
            return self._run(stmt, params, _rowcount) > 0
        with self._begin() as conn:
            if conn.execute(stmt, params).rowcount == 0:
                return False
            if traceback is not None:
                conn.execute(
                    update(statuses).where(statuses.c.uuid == uuid).values(traceback=traceback)
                )
            if artifact is not None:
                conn.execute(artifacts.insert().values(**_artifact_values(artifact)))
        return True

    def end_attempt(
        self,
        uuid: UUID,
        transition: Transition,
        now: datetime,
        *,
        message: str | None,
        traceback: str | None = None,
    ) -> bool:
        stmt = self._transition_by_uuid(transition)
        params = {"p_uuid": uuid, "p_now": now, "p_message": message}
        with self._begin() as conn:
            # The write first: it locks the row, so the attempt read below is this one's.
            if conn.execute(stmt, params).rowcount == 0:
                return False
            if traceback is not None:
                conn.execute(
                    update(statuses).where(statuses.c.uuid == uuid).values(traceback=traceback)
                )
            conn.execute(_RECORD_ATTEMPT, params)
        return True

    def attempts(self, uuid: UUID) -> list[Attempt]:
        return self._run(
            _ATTEMPTS,
            {"p_uuid": uuid},
            lambda rows: [Attempt(**{k: row._mapping[k] for k in _ATTEMPT_FIELDS}) for row in rows],
        )

    def transition_tasks(
        self,
        task_ids: Sequence[str],
        transition: Transition,
        now: Times,
        *,
        unchanged_since: datetime | None = None,
        started: Times | None = None,
    ) -> list[TaskKey]:
        at = per_task(task_ids, now)
        began = None if started is None else per_task(task_ids, started)
        if not at:
            return []
        if not self.engine.dialect.update_returning:
            return self._transition_tasks_locking(at, began, transition, unchanged_since)
        variant = "returning" if unchanged_since is None else "returning, unchanged"
        changed: list[TaskKey] = []
        for chunk in _chunks(list(at)):
            stamps = _Stamps.sized(len(chunk), began is not None, self._stamp_form)
            stmt = self._stamped_transition(transition, variant, stamps)
            params = {**stamps.params(chunk, at, began), "p_since": unchanged_since}
            changed += self._run(stmt, params, _keys)
        return changed

    def _stamped_transition(self, transition: Transition, variant: str, stamps: _Stamps) -> Update:
        """The batched transition of ``variant`` for a chunk of the size of ``stamps``."""
        cache_key = (transition, variant, stamps)
        stmt = self._task_transitions.get(cache_key)
        if stmt is None:
            which = and_(stamps.which, _UNCHANGED) if "unchanged" in variant else stamps.which
            stmt = _transition_statement(transition, which, stamps.at, stamps.started)
            if "returning" in variant:
                stmt = stmt.returning(*_KEY_COLUMNS)
            self._task_transitions[cache_key] = stmt
        return stmt

    def _transition_tasks_locking(
        self,
        at: dict[str, datetime],
        began: dict[str, datetime] | None,
        transition: Transition,
        unchanged_since: datetime | None,
    ) -> list[TaskKey]:
        """Without UPDATE .. RETURNING (MySQL, MariaDB): lock the rows that can change, then
        change them, in one transaction."""
        which: list[ColumnElement[bool]] = [_c.state.in_(_states(transition.sources))]
        if unchanged_since is not None:
            which.append(_c.modified < unchanged_since)
        changed: list[TaskKey] = []
        with self._begin() as conn:
            for chunk in _chunks(list(at)):
                keys = _keys(
                    conn.execute(
                        select(*_KEY_COLUMNS).where(_c.task_id.in_(chunk), *which).with_for_update()
                    )
                )
                if keys:
                    locked = [key.task_id for key in keys]
                    stamps = _Stamps.sized(len(locked), began is not None, "case")
                    stmt = self._stamped_transition(transition, "locked", stamps)
                    conn.execute(stmt, stamps.params(locked, at, began))
                    changed += keys
        return changed

    def end_tasks(
        self,
        task_ids: Sequence[str],
        transition: Transition,
        now: Times,
        *,
        started: Times | None = None,
    ) -> EndedBatch:
        if not self.engine.dialect.update_returning:
            # MySQL, MariaDB: the locking write reads the keys anyway, as the base's does.
            return super().end_tasks(task_ids, transition, now, started=started)
        at = per_task(task_ids, now)
        began = None if started is None else per_task(task_ids, started)
        unchanged: list[str] = []
        contained: list[TaskKey] = []
        # One transaction: a retried batch must not find its first attempt half done.
        with self._begin() as conn:
            for chunk in _chunks(list(at)):
                stamps = _Stamps.sized(len(chunk), began is not None, self._stamp_form)
                if len(chunk) <= _RETURNED_ROWS:
                    # A few rows: the write returns them, one statement instead of two.
                    stmt = self._stamped_transition(transition, "returning", stamps)
                    changed = _keys(conn.execute(stmt, stamps.params(chunk, at, began)))
                    batch = EndedBatch.of(chunk, changed)
                    unchanged += batch.unchanged
                    contained += batch.contained
                    continue
                stmt = self._stamped_transition(transition, "quiet", stamps)
                params = stamps.params(chunk, at, began)
                ended = conn.execute(stmt, params).rowcount
                if ended == len(chunk):
                    # No RETURNING: a row per task would cost more than the write itself.
                    contained += _keys(conn.execute(stamps.contained, params))
                    continue
                # Some did not change: those that did carry their own time and the new state.
                params["p_state"] = transition.target.value
                changed = _keys(conn.execute(stamps.written, params))
                batch = EndedBatch.of(chunk, changed)
                unchanged += batch.unchanged
                contained += batch.contained
        return EndedBatch(unchanged, contained)

    def canceled_unstarted(self, since: datetime) -> list[str]:
        return self._run(
            _CANCELED_UNSTARTED, {"p_since": since}, lambda result: list(result.scalars())
        )

    def add_steps(self, uuid: UUID, completed: int, total: int, now: datetime) -> bool:
        stmt = _ADD_STEPS[(bool(completed), bool(total))]
        params = {"p_uuid": uuid, "p_now": now, "p_completed": completed, "p_total": total}
        return self._run(stmt, params, _rowcount) > 0

    def set_stage(self, uuids: Sequence[UUID], stage: str | None, now: datetime) -> int:
        c = statuses.c
        return self._update_many(uuids, {c.stage: stage, c.modified: now}, _RUNNING_BY_KEY)

    def set_name(self, uuids: Sequence[UUID], name: str, now: datetime) -> int:
        c = statuses.c
        return self._update_many(uuids, {c.name: name, c.modified: now}, literal(True))

    def _update_many(
        self, uuids: Sequence[UUID], values: Mapping[Any, Any], where: ColumnElement[bool]
    ) -> int:
        count = 0
        with self._begin() as conn:
            for chunk in _chunks(list(uuids)):
                stmt = update(statuses).where(statuses.c.uuid.in_(chunk), where).values(values)
                count += conn.execute(stmt).rowcount
        return count

    def beat(self, uuids: Sequence[UUID], now: datetime) -> int:
        c = statuses.c
        # Not a change a follower is shown: the feed's stamp and count stay as they are.
        values = {c.heartbeat_at: now, c.changed: c.changed, c.version: c.version}
        return self._update_many(uuids, values, _ACTIVE_BY_KEY)

    def lost(self, before: datetime, limit: int) -> list[TaskStatus]:
        # The rule of taskstatus.models.is_lost, as one query.
        c = statuses.c
        held = and_(
            c.state.in_([State.PENDING.value, State.RETRYING.value]),
            c.redeliver_on_loss.is_(False),
            c.heartbeat_at > c.modified,
        )
        stmt = (
            select(*_STATUS_COLUMNS)
            .where(
                or_(c.state == State.IN_PROGRESS.value, held),
                c.is_container.is_(False),
                c.heartbeat_at < before,
            )
            .order_by(c.heartbeat_at)
            .limit(limit)
        )
        return self._run(stmt, None, lambda result: [_status(r._mapping) for r in result])

    def seal(self, uuid: UUID, now: datetime) -> None:
        with self._begin() as conn:
            conn.execute(
                update(statuses).where(statuses.c.uuid == uuid).values(sealed=True, modified=now)
            )

    def add_artifact(self, artifact: Artifact) -> None:
        try:
            with self._begin() as conn:
                conn.execute(artifacts.insert().values(**_artifact_values(artifact)))
        except sa_exc.IntegrityError as exc:
            raise StoreError(
                f"cannot add artifact to status {artifact.status_uuid}: {_reason(exc)}"
            ) from exc

    def delete(self, uuid: UUID) -> list[Artifact]:
        with self._begin() as conn:
            tree = self._subtree(conn, uuid)
            files = self._file_artifacts(conn, tree)
            self._delete_tree(conn, tree)
        return files

    def purge(self, before: datetime, batch_size: int) -> Iterator[tuple[int, list[Artifact]]]:
        # Batches in (created, id) order, the order of the index on (parent_uuid, created):
        # each batch reads on from where the last one stopped, nothing to sort. The deletes
        # name rows by their integer ids, not by uuid: no per-row type processing.
        sql = _PURGE_SQL[self.dialect == "postgresql"]
        sqlite = self.dialect == "sqlite"
        pace = BatchPace(batch_size, _PURGE_BUDGET, _SQLITE_PURGE_GAP if sqlite else 0.0)
        with self._errors():
            if sqlite:
                with self.engine.connect() as conn, self._sqlite_purging(conn):
                    yield from self._purge_serial(conn, sql, pace, before)
            else:
                yield from self._purge_lanes(sql, pace, before)

    def _purge_serial(
        self, conn: Connection, sql: _PurgeSQL, pace: BatchPace, before: datetime
    ) -> Iterator[tuple[int, list[Artifact]]]:
        """SQLite has one writer at a time: one batch after the other, on one connection
        (made ready by :meth:`_sqlite_purging`)."""
        after: tuple[datetime, int] | None = None
        while True:
            stmt, params = _purge_roots(before, after, pace.size)
            with conn.begin():
                roots = conn.execute(stmt, params).all()
            if not roots:
                return
            after = (roots[-1].created, roots[-1].id)
            count, files, seconds = self._purge_batch(conn, sql, pace, roots)
            pace.done(len(roots), seconds)
            # The pages this batch wrote to the log go to the database file now, while the
            # database is free for the workers (a checkpoint takes no write lock), not in
            # the next batch's commit, which would last twice as long.
            conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
            conn.commit()
            yield count, files

    def _purge_lanes(
        self, sql: _PurgeSQL, pace: BatchPace, before: datetime
    ) -> Iterator[tuple[int, list[Artifact]]]:
        """A database server deletes on :data:`_PURGE_LANES` connections at once. Most of a
        deleted row's cost is the server's (its foreign keys' checks, one query each), which
        one connection spends on one server process: a second one nearly doubles the rate.
        The next batch's roots are read while the lanes delete; batches are disjoint trees,
        so the lanes never wait for each other's rows. Each batch is yielded once committed;
        after a failure the batches still running finish and are yielded too (their files
        must go), then the error is raised. No connection is held while waiting for another:
        a pool smaller than the lanes only makes them take turns."""

        def delete(roots: Sequence[Any]) -> tuple[int, list[Artifact], float]:
            with self.engine.connect() as conn:
                return self._purge_batch(conn, sql, pace, roots)

        running: dict[Future[tuple[int, list[Artifact], float]], int] = {}
        after: tuple[datetime, int] | None = None
        failure: BaseException | None = None
        more = True
        with ThreadPoolExecutor(_PURGE_LANES, thread_name_prefix="taskstatus-purge") as pool:
            while True:
                while more and failure is None and len(running) < _PURGE_LANES:
                    stmt, params = _purge_roots(before, after, pace.size)
                    roots = self._run(stmt, params, _all_rows)
                    if not roots:
                        more = False
                        break
                    after = (roots[-1].created, roots[-1].id)
                    running[pool.submit(delete, roots)] = len(roots)
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    size = running.pop(future)
                    try:
                        count, files, seconds = future.result()
                    except BaseException as exc:  # raised below, once the others are in
                        failure = failure or exc
                        continue
                    pace.done(size, seconds)
                    yield count, files
        if failure is not None:
            raise failure

    def _purge_batch(
        self, conn: Connection, sql: _PurgeSQL, pace: BatchPace, roots: Sequence[Any]
    ) -> tuple[int, list[Artifact], float]:
        """Delete the trees of ``roots`` that have nothing unfinished, in one transaction, run
        again if a deadlock undid it: how many statuses went, their file artifacts and how
        long the deletes took, commit included."""
        for attempt in range(1, _DEADLOCK_ATTEMPTS + 1):
            try:
                with conn.begin():
                    levels = self._purge_levels(conn, sql, roots)
                    doomed = [i for level in levels for i in level]
                    files: list[Artifact] = []
                    if sql.files is not None:  # else the DELETE below returns them
                        for chunk in _chunks(doomed, sql.chunk):
                            rows = conn.execute(sql.files, {"p_ids": chunk})
                            files += [_artifact(row._mapping) for row in rows]
                    pace.wait()
                    started = time.monotonic()
                    for chunk in _chunks(doomed, sql.chunk):
                        gone = conn.execute(sql.artifacts, {"p_ids": chunk})
                        if sql.files is None:
                            files += [_artifact(row._mapping) for row in gone]
                        conn.execute(sql.attempts, {"p_ids": chunk})
                    # Children first, so no statement depends on the foreign key's cascade.
                    for level in reversed(levels):
                        for chunk in _chunks(level, sql.chunk):
                            conn.execute(sql.statuses, {"p_ids": chunk})
                return len(doomed), files, time.monotonic() - started
            except sa_exc.DBAPIError as exc:
                # A worker's write and this batch locked each other: the database undid the
                # batch; do it again.
                if not _deadlocked(exc) or attempt == _DEADLOCK_ATTEMPTS:
                    raise
                time.sleep(0.005 * attempt)
        raise AssertionError("unreachable")

    @contextmanager
    def _sqlite_purging(self, conn: Connection) -> Iterator[None]:
        """SQLite: the purge's connection while it purges. A larger page cache: each deleted
        row changes a page of each index on a random key (uuid, task_id, owner); with the
        default 2 MB cache most of those pages are read from the file again and again, and
        the purge's transactions, which lock the database, last several times longer. No
        automatic checkpoint in its commits: the purge checkpoints between its batches.
        Both back to the connection's own settings afterwards (which frees the memory)."""
        size = int(conn.exec_driver_sql("PRAGMA cache_size").scalar() or 0)
        pages = int(conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() or 0)
        conn.exec_driver_sql(f"PRAGMA cache_size=-{_SQLITE_PURGE_CACHE_KIB}")
        conn.exec_driver_sql("PRAGMA wal_autocheckpoint=0")
        conn.commit()  # nothing to commit: ends SQLAlchemy's own view of a transaction
        try:
            yield
        finally:
            conn.rollback()  # what a failed batch left
            conn.exec_driver_sql(f"PRAGMA cache_size={size}")
            conn.exec_driver_sql(f"PRAGMA wal_autocheckpoint={pages}")

    def _purge_levels(
        self, conn: Connection, sql: _PurgeSQL, roots: Sequence[Any]
    ) -> list[list[int]]:
        """The ids of the trees of ``roots`` that may go (no unfinished status in them), top
        level first; one indexed query per level, so a single one when no root has children."""
        root_of = {r.uuid: r.id for r in roots}  # uuid -> id of its tree's root
        top = {r.id: r.id for r in roots}  # id -> id of its tree's root
        levels = [list(top)]
        busy: set[int] = set()
        level = list(root_of)
        while level:
            found = []
            for chunk in _chunks(level, sql.chunk):
                for kid in conn.execute(sql.children, {"p_uuids": chunk}):
                    if kid.uuid in root_of:
                        continue
                    root = root_of[kid.uuid] = root_of[kid.parent_uuid]
                    top[kid.id] = root
                    found.append(kid)
                    if kid.state not in _TERMINAL:
                        busy.add(root)
            levels.append([kid.id for kid in found])
            level = [kid.uuid for kid in found]
        return [kept for lv in levels if (kept := [i for i in lv if top[i] not in busy])]

    def _subtree(self, conn: Connection, root: UUID) -> list[UUID]:
        """``root`` (if it exists) and all its descendants."""
        c = statuses.c
        found = list(conn.execute(select(c.uuid).where(c.uuid == root)).scalars())
        seen = set(found)
        level = found
        # Walk down level by level: portable, and each level is one indexed query.
        while level:
            kids: list[UUID] = []
            for chunk in _chunks(level):
                kids += conn.execute(select(c.uuid).where(c.parent_uuid.in_(chunk))).scalars()
            level = [u for u in kids if u not in seen]
            seen.update(level)
            found = found + level
        return found

    def _file_artifacts(self, conn: Connection, uuids: Sequence[UUID]) -> list[Artifact]:
        result: list[Artifact] = []
        for chunk in _chunks(list(uuids)):
            query = select(artifacts).where(
                artifacts.c.status_uuid.in_(chunk), artifacts.c.file.is_not(None)
            )
            result += [_artifact(row._mapping) for row in conn.execute(query)]
        return result

    def _delete_tree(self, conn: Connection, uuids: Sequence[UUID]) -> None:
        for chunk in _chunks(list(uuids)):
            conn.execute(artifacts.delete().where(artifacts.c.status_uuid.in_(chunk)))
            conn.execute(attempts.delete().where(attempts.c.status_uuid.in_(chunk)))
        # Children first, so no statement depends on the foreign key's cascade.
        for chunk in reversed(list(_chunks(list(uuids)))):
            conn.execute(statuses.delete().where(statuses.c.uuid.in_(chunk)))

    # -- reads -------------------------------------------------------------------------------
    def get(self, uuid: UUID) -> TaskStatus | None:
        row = self._run(_BY_UUID, {"p_uuid": uuid}, _first)
        return _status(row._mapping) if row else None

    def get_by_task_id(self, task_id: str) -> TaskStatus | None:
        row = self._run(_BY_TASK_ID, {"p_task_id": task_id}, _first)
        return _status(row._mapping) if row else None

    def scan(self) -> list[Change]:
        return self._run(_SCAN, None, _changes)

    def scan_artifacts(self) -> list[Artifact]:
        return self._run(_SCAN_ARTIFACTS, None, lambda rows: [_artifact(r._mapping) for r in rows])

    def _filtered(
        self, query: StatusQuery
    ) -> tuple[tuple[object, ...], list[ColumnElement[bool]], dict[str, Any]]:
        """The query's shape (cache key), its conditions and their parameters.

        Conditions take bound parameters, so one statement per shape is built and compiled
        once; a single owner (the common case) is an equality, not an IN list.
        """
        c = statuses.c
        where: list[ColumnElement[bool]] = []
        params: dict[str, Any] = {}
        owners = None if query.user_ids is None else list(query.user_ids)
        if owners is not None and len(owners) == 1:
            where.append(c.user_id == bindparam("p_owner"))
            params["p_owner"] = owners[0]
        elif owners is not None:
            where.append(c.user_id.in_(bindparam("p_owners", expanding=True)))
            params["p_owners"] = owners
        states = query.wanted_states()
        if states is not None and len(states) == 1:
            where.append(c.state == bindparam("p_state"))
            params["p_state"] = next(iter(states)).value
        elif states is not None:
            where.append(c.state.in_(bindparam("p_states", expanding=True)))
            params["p_states"] = sorted(s.value for s in states)
        for name, field, value in (
            ("p_queue", c.queue, query.queue),
            ("p_class", c.task_class, query.task_class),
        ):
            if value is not None:
                where.append(field == bindparam(name))
                params[name] = value
        if query.search:
            # Searched literally: the LIKE wildcards in the text are escaped.
            where.append(c.name.icontains(bindparam("p_search"), escape="/"))
            params["p_search"] = (
                query.search.replace("/", "//").replace("%", "/%").replace("_", "/_")
            )
        if query.parent is None:
            where.append(c.parent_uuid.is_(None))
        elif query.parent is not ANY:
            where.append(c.parent_uuid == bindparam("p_parent"))
            params["p_parent"] = query.parent
        if query.created_after is not None:
            where.append(c.created >= bindparam("p_after", type_=UTCDateTime()))
            params["p_after"] = query.created_after
        if query.created_before is not None:
            where.append(c.created < bindparam("p_before", type_=UTCDateTime()))
            params["p_before"] = query.created_before
        if query.after is not None:
            where.append(_after(statuses, query.after, params))
        shape = (
            None if owners is None else len(owners) == 1,
            *(name in params for name in _SHAPE_PARAMS),
            query.parent is None,
        )
        return shape, where, params

    def query(self, query: StatusQuery) -> list[TaskStatus]:
        shape, where, params = self._filtered(query)
        key = ("query", query.limit is not None, *shape)
        stmt = self._queries.get(key)
        if stmt is None:
            c = statuses.c
            stmt = (
                select(*_STATUS_COLUMNS)
                .where(and_(True, *where))
                .order_by(c.created.desc(), c.id.desc())
                .offset(bindparam("p_offset"))
            )
            if query.limit is not None:
                stmt = stmt.limit(bindparam("p_limit"))
            self._queries[key] = stmt
        params.update(p_offset=query.offset, p_limit=query.limit)
        return self._run(stmt, params, lambda rows: [_status(row._mapping) for row in rows])

    def count(self, query: StatusQuery) -> int:
        shape, where, params = self._filtered(query)
        key = ("count", *shape)
        stmt = self._queries.get(key)
        if stmt is None:
            stmt = self._queries[key] = (
                select(func.count()).select_from(statuses).where(and_(True, *where))
            )
        return int(self._run(stmt, params, lambda result: result.scalar_one()))

    def child_states(self, uuid: UUID) -> Counter[State]:
        c = statuses.c
        stmt = select(c.state, func.count()).where(c.parent_uuid == uuid).group_by(c.state)
        with self._begin() as conn:
            return Counter({State(state): n for state, n in conn.execute(stmt)})

    def summary(self) -> Summary:
        # Two statements on one connection: the count per state reads only the index of
        # (state, created), the oldest start only the rows In Progress (as many as are
        # running, found by that index).
        with self._begin() as conn:
            counts = {State(state): int(n) for state, n in conn.execute(_COUNT_BY_STATE)}
            oldest = conn.execute(_OLDEST_IN_PROGRESS).scalar_one()
        return Summary(counts, oldest)

    def step_sums(self, uuids: Sequence[UUID]) -> dict[UUID, tuple[int, int]]:
        if not uuids:
            return {}
        wanted = set(uuids)
        c = statuses.c
        parent_of: dict[UUID, UUID] = {}
        leaves: list[tuple[UUID, int, int]] = []
        level = list(wanted)
        # Walk down level by level; a leaf counts for every wanted ancestor, so a container
        # listed with one of its own containers gets the same sums as when read alone.
        with self._begin() as conn:
            while level:
                found = []
                for chunk in _chunks(level):
                    query = select(
                        c.uuid, c.parent_uuid, c.is_container, c.completed_steps, c.total_steps
                    ).where(c.parent_uuid.in_(chunk))
                    for row in conn.execute(query):
                        parent_of[row.uuid] = row.parent_uuid
                        if not row.is_container:
                            leaves.append((row.parent_uuid, row.completed_steps, row.total_steps))
                        elif row.uuid not in wanted:  # a wanted one is walked from already
                            found.append(row.uuid)
                level = found
        sums: dict[UUID, tuple[int, int]] = {}
        for parent, completed, total in leaves:
            ancestor: UUID | None = parent
            while ancestor is not None:
                if ancestor in wanted:
                    done, all_total = sums.get(ancestor, (0, 0))
                    sums[ancestor] = (done + completed, all_total + total)
                ancestor = parent_of.get(ancestor)
        return sums

    def artifacts(self, status_uuids: Sequence[UUID]) -> list[Artifact]:
        result: list[Artifact] = []
        for chunk in _chunks(list(status_uuids)):
            result += self._run(
                _ARTIFACTS_OF,
                {"p_uuids": chunk},
                lambda rows: [_artifact(row._mapping) for row in rows],
            )
        return result

    def get_artifact(self, uuid: UUID) -> Artifact | None:
        with self._begin() as conn:
            row = conn.execute(select(artifacts).where(artifacts.c.uuid == uuid)).first()
        return _artifact(row._mapping) if row else None

    def artifact_query(
        self,
        status_uuids: Sequence[UUID] | None,
        user_ids: Sequence[str] | None,
        limit: int,
        offset: int,
        *,
        after: tuple[datetime, UUID] | None = None,
    ) -> list[Artifact]:
        a = artifacts.c
        stmt = select(artifacts).order_by(a.created.desc(), a.id.desc()).limit(limit)
        stmt = stmt.offset(offset)
        if after is not None:
            params: dict[str, Any] = {}
            stmt = stmt.where(_after(artifacts, after, params)).params(params)
        if status_uuids is not None:
            stmt = stmt.where(a.status_uuid.in_(list(status_uuids)))
        if user_ids is not None:
            owned = select(statuses.c.uuid).where(statuses.c.user_id.in_(list(user_ids)))
            stmt = stmt.where(a.status_uuid.in_(owned))
        with self._begin() as conn:
            return [_artifact(row._mapping) for row in conn.execute(stmt)]

    # -- the change feed ---------------------------------------------------------------------
    def changes(
        self,
        after: Position,
        limit: int,
        *,
        user_ids: Sequence[str] | None = None,
        root: UUID | None = None,
    ) -> list[Change]:
        c = statuses.c
        stmt = select(statuses).order_by(c.changed, c.id)
        if after.floor is not None:
            stmt = stmt.where(c.changed >= after.floor)
        if user_ids is not None:
            stmt = stmt.where(c.user_id.in_(list(user_ids)))
        if root is not None:
            stmt = stmt.where(c.uuid.in_(select(_subtree_of(root).c.uuid)))
        # Delivered rows may come back, each at most once: read enough to fill the page.
        stmt = stmt.limit(limit + len(after.seen))
        found = self._run(stmt, None, _changes)
        return after.new(found)[:limit]

    def last_changed(self) -> datetime | None:
        newest = select(func.max(statuses.c.changed))
        stamp: datetime | None = self._run(newest, None, lambda result: result.scalar())
        return stamp

    def change_signal(self) -> ChangeSignal | None:
        if self.dialect != "postgresql":
            return None
        with self._lock:
            if self._listener is None:
                self.open()
                self._listener = _Listener(self.engine)
            return self._listener.signal


class _Listener:
    """A thread that LISTENs on PostgreSQL for the notifications of migration 0004's trigger
    and fires a :class:`ChangeSignal`; on a lost connection it fires (followers then read)
    and reconnects."""

    CHANNEL = "taskstatus_changes"

    def __init__(self, engine: Engine) -> None:
        self.signal = ChangeSignal()
        #: The server process of the listening connection (None while not connected).
        self.backend_pid: int | None = None
        self._engine = engine
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="taskstatus-listen", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                pooled = self._engine.raw_connection()
                conn: Any = pooled.driver_connection
                pooled.detach()  # held for as long as it listens: not the pool's any more
                try:
                    conn.rollback()
                    conn.autocommit = True
                    conn.execute(f"LISTEN {self.CHANNEL}")
                    self.backend_pid = conn.info.backend_pid
                    self.signal.fire()  # whatever changed while not listening
                    while not self._stopped.is_set():
                        for _ in conn.notifies(timeout=1.0):
                            self.signal.fire()
                finally:
                    self.backend_pid = None
                    conn.close()
            except Exception:
                log.warning("taskstatus cannot listen for changes; retrying", exc_info=True)
                self.signal.fire()
                self._stopped.wait(1.0)


def _subtree_of(root: UUID) -> Any:
    """A recursive CTE of the uuids of ``root`` and all its descendants."""
    c = statuses.c
    tree = select(c.uuid).where(c.uuid == root).cte("subtree", recursive=True)
    child = statuses.alias("child")
    return tree.union_all(select(child.c.uuid).where(child.c.parent_uuid == tree.c.uuid))


#: Optional parameters of a status query: whether each is given is part of its shape.
_SHAPE_PARAMS = (
    "p_state",
    "p_states",
    "p_queue",
    "p_class",
    "p_search",
    "p_parent",
    "p_after",
    "p_before",
    "p_key_created",
)


def _after(table: Table, key: tuple[datetime, UUID], params: dict[str, Any]) -> ColumnElement[bool]:
    """Rows after ``key`` (created, uuid) in the order ``created DESC, id DESC``.

    Written as ``created <= x AND (created < x OR id < <id of uuid>)`` so that an index on
    ``created`` bounds the scan; a key whose row is gone compares its id as 0, which skips
    the rows of exactly its ``created``.
    """
    c = table.c
    key_id = select(c.id).where(c.uuid == bindparam("p_key_uuid")).scalar_subquery()
    created = bindparam("p_key_created", type_=UTCDateTime())
    params["p_key_created"], params["p_key_uuid"] = key
    return and_(c.created <= created, or_(c.created < created, c.id < func.coalesce(key_id, 0)))


def _postgres_options(url: URL) -> str:
    """Session options: status writes commit without waiting for the WAL flush.

    A crash of the PostgreSQL server (not of a worker) may lose the last fraction of a second
    of status writes; the database stays consistent. Put ``-c synchronous_commit=on`` in the
    URL's ``options`` to make every write wait for the disk.
    """
    given = url.query.get("options", "")
    given = given if isinstance(given, str) else " ".join(given)
    if "synchronous_commit" in given:
        return given
    return f"{given} -c synchronous_commit=off".strip()


#: How long a new SQLite connection waits for a lock (also what PRAGMA busy_timeout is given).
_SQLITE_BUSY_SECONDS = 30.0


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(_SQLITE_BUSY_SECONDS * 1000)}")
        _journal_wal(cursor)
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def _journal_wal(cursor: Any) -> None:
    """Switch to write-ahead logging. SQLite answers "database is locked" at once, without
    its busy handler, when another process is switching a new file at the same moment (the
    workers of a first deployment): wait for it as for any lock."""
    deadline = time.monotonic() + _SQLITE_BUSY_SECONDS
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(0.01)


def _rowcount(result: CursorResult[Any]) -> int:
    return result.rowcount


def _all_rows(result: CursorResult[Any]) -> Sequence[Row[Any]]:
    return result.all()


def _first(result: CursorResult[Any]) -> Row[Any] | None:
    return result.first()


def _clamped_add(column: Any, delta: Any) -> Any:
    """``column + delta`` (delta >= 0) capped at MAX_STEPS, computed by the database."""
    return case((column > MAX_STEPS - delta, MAX_STEPS), else_=column + delta)


def _reason(exc: sa_exc.DBAPIError) -> str:
    return str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)


_STATUS_FIELDS = [c.name for c in statuses.c if c.name not in ("id", "changed", "version")]
#: What a read of statuses selects: what a TaskStatus holds, not the change feed's columns.
_STATUS_COLUMNS = [statuses.c[name] for name in _STATUS_FIELDS]
_ARTIFACT_FIELDS = [c.name for c in artifacts.c if c.name != "id"]


def _status_values(status: TaskStatus) -> dict[str, Any]:
    values = {name: getattr(status, name) for name in _STATUS_FIELDS}
    values["state"] = status.state.value
    return values


def _deadlocked(exc: sa_exc.DBAPIError) -> bool:
    """Whether the database undid the statement to break a deadlock (trying again is safe)."""
    orig = exc.orig
    if getattr(orig, "sqlstate", None) in _POSTGRESQL_DEADLOCKS:
        return True
    args: tuple[Any, ...] = getattr(orig, "args", ())
    return bool(args) and args[0] in _MYSQL_DEADLOCKS


def _status_columns(chunk: Sequence[TaskStatus]) -> list[list[Any]]:
    """The values of :data:`_STATUS_FIELDS` of ``chunk``, column by column."""
    return [
        [s.state.value for s in chunk] if name == "state" else [getattr(s, name) for s in chunk]
        for name in _STATUS_FIELDS
    ]


def _status(row: Mapping[Any, Any]) -> TaskStatus:
    values = {name: row[name] for name in _STATUS_FIELDS}
    values["state"] = State(values["state"])
    return TaskStatus(**values)


def _changes(result: CursorResult[Any]) -> list[Change]:
    """Rows of ``select(statuses)``, as the change feed's :class:`Change`."""
    return [Change(_status(r._mapping), r.id, r.version, r.changed) for r in result]


def _artifact_values(artifact: Artifact) -> dict[str, Any]:
    return {name: getattr(artifact, name) for name in _ARTIFACT_FIELDS}


def _artifact(row: Mapping[Any, Any]) -> Artifact:
    return Artifact(**{name: row[name] for name in _ARTIFACT_FIELDS})


# -- prebuilt statements: built and compiled once, executed with parameters ---------------------
class _Unindexed(ColumnElement[Any]):
    """A column whose condition must not pick the index that holds it.

    A batch names its rows by a unique key (``task_id IN (...)``) and also requires their
    state, or a container. A planner without fresh statistics (SQLite always, PostgreSQL
    until the table is analyzed) guesses that a few states match fewer rows than a list of a
    hundred keys and walks the ``(state, created)`` index instead: each batch then reads every
    waiting task, and gets slower as the backlog grows. Rendered as an expression no index
    covers (``+state``, SQLite's documented way; ``state || ''`` on PostgreSQL). MySQL and
    MariaDB count the rows in the index before they choose, and get the column as it is."""

    inherit_cache = True
    _traverse_internals = [  # noqa: RUF012 (the cache key; SQLAlchemy declares it so)
        ("column", InternalTraversal.dp_clauseelement)
    ]

    def __init__(self, column: ColumnElement[Any]) -> None:
        self.column = column
        self.type = column.type


@compiles(_Unindexed)
def _compile_unindexed(element: _Unindexed, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.column, **kw)


@compiles(_Unindexed, "sqlite")
def _compile_unindexed_sqlite(element: _Unindexed, compiler: SQLCompiler, **kw: Any) -> str:
    return "+" + compiler.process(element.column, **kw)


@compiles(_Unindexed, "postgresql")
def _compile_unindexed_postgresql(element: _Unindexed, compiler: SQLCompiler, **kw: Any) -> str:
    return f"({compiler.process(element.column, **kw)} || '')"


_c = statuses.c
#: The state, in conditions of statements that name their rows by key.
_state_by_key = _Unindexed(_c.state)
_RUNNING_BY_KEY = _state_by_key == literal_column(f"'{State.IN_PROGRESS.value}'")
_INSERT_STATUS = statuses.insert()
_BY_UUID = select(*_STATUS_COLUMNS).where(_c.uuid == bindparam("p_uuid"))
_BY_TASK_ID = select(*_STATUS_COLUMNS).where(_c.task_id == bindparam("p_task_id"))
#: A write that changes nothing (nor the change feed's columns): it takes the row's lock.
_LOCK_ROW = (
    update(statuses)
    .where(_c.uuid == bindparam("p_uuid"))
    .values({_c.changed: _c.changed, _c.version: _c.version})
)
_SCAN = select(statuses).order_by(_c.id)
_SCAN_ARTIFACTS = select(artifacts).order_by(artifacts.c.id)
#: The artifacts of a page of statuses, oldest first; one statement, autocommitted.
_ARTIFACTS_OF = (
    select(artifacts)
    .where(artifacts.c.status_uuid.in_(bindparam("p_uuids", expanding=True)))
    .order_by(artifacts.c.created, artifacts.c.id)
)
_NOW = bindparam("p_now", type_=UTCDateTime())
_KEY_COLUMNS = (_c.task_id, _c.uuid, _c.parent_uuid, _c.is_container)
#: Not modified since (a start that another process may have written first).
_UNCHANGED = _c.modified < bindparam("p_since", type_=UTCDateTime())
_CANCELED_UNSTARTED = select(_c.task_id).where(
    # Inline, so that the planner matches the partial index's predicate.
    _c.state == literal_column(f"'{State.CANCELED.value}'"),
    _c.modified >= bindparam("p_since", type_=UTCDateTime()),
    _c.started_at.is_(None),
    _c.is_container.is_(False),
)


# -- purge: top-level finished statuses, a batch at a time in (created, id) order -----------
_first_roots = (
    select(_c.id, _c.created, _c.uuid)
    .where(
        _c.parent_uuid.is_(None),
        # Not by the (state, created) index, which would then need a sort of every match.
        _Unindexed(_c.state).in_([literal_column(f"'{state}'") for state in _TERMINAL]),
        _c.created < bindparam("p_before", type_=UTCDateTime()),
    )
    .order_by(_c.created, _c.id)
    .limit(bindparam("p_limit"))
)
_FROM = bindparam("p_from", type_=UTCDateTime())
#: The first batch, and the next ones: after the last (created, id) of the one before.
_PURGE_ROOTS = (
    _first_roots,
    _first_roots.where(_c.created >= _FROM, or_(_c.created > _FROM, _c.id > bindparam("p_id"))),
)


def _purge_roots(
    before: datetime, after: tuple[datetime, int] | None, size: int
) -> tuple[Select[Any], dict[str, Any]]:
    """The query of the next ``size`` finished top-level statuses created before ``before``,
    after the (created, id) key ``after``, and its parameters."""
    params: dict[str, Any] = {"p_before": before, "p_limit": size}
    if after is not None:
        params.update(p_from=after[0], p_id=after[1])
    return _PURGE_ROOTS[after is not None], params


@dataclass(frozen=True)
class _PurgeSQL:
    """The statements of a purge batch, which name rows by lists of keys: bound as one array
    on PostgreSQL (one parameter, one plan), else as IN lists of at most ``chunk`` items.
    PostgreSQL's delete of the artifacts returns those with a file (``files`` is None);
    elsewhere ``files`` reads them first."""

    chunk: int
    children: Select[Any]
    files: Select[Any] | None
    artifacts: Executable
    attempts: Delete
    statuses: Delete

    @classmethod
    def build(cls, arrays: bool) -> _PurgeSQL:
        def among(column: ColumnElement[Any], name: str, item: Any) -> ColumnElement[bool]:
            if arrays:
                return column == any_(bindparam(name, type_=postgresql.ARRAY(item)))
            return column.in_(bindparam(name, expanding=True))

        by_id = among(_c.id, "p_ids", BigInteger())
        uuids = select(_c.uuid).where(by_id)
        delete_artifacts = artifacts.delete().where(artifacts.c.status_uuid.in_(uuids))
        files: Select[Any] | None
        remove_artifacts: Executable
        if arrays:
            gone = delete_artifacts.returning(*artifacts.c).cte("gone")
            files, remove_artifacts = None, select(gone).where(gone.c.file.is_not(None))
        else:
            files = select(artifacts).where(
                artifacts.c.status_uuid.in_(uuids), artifacts.c.file.is_not(None)
            )
            remove_artifacts = delete_artifacts
        return cls(
            chunk=2**31 if arrays else _IN_CHUNK,
            children=select(_c.id, _c.uuid, _c.state, _c.parent_uuid).where(
                among(_c.parent_uuid, "p_uuids", Uuid())
            ),
            files=files,
            artifacts=remove_artifacts,
            attempts=attempts.delete().where(attempts.c.status_uuid.in_(uuids)),
            statuses=statuses.delete().where(by_id),
        )


_PURGE_SQL = {arrays: _PurgeSQL.build(arrays) for arrays in (False, True)}

_ATTEMPT_FIELDS = ("number", "started_at", "retried_at", "message")
#: The attempt a retry ended, read from the row the retry has just written: the retry
#: counted it (Attempts.INCREMENT), so it is the one before the status's count; its start
#: is the status's, which a retry leaves alone.
_RECORD_ATTEMPT = attempts.insert().from_select(
    ["status_uuid", *_ATTEMPT_FIELDS],
    select(
        _c.uuid,
        _c.attempts - 1,
        _c.attempt_started_at,
        _NOW,
        bindparam("p_message", type_=attempts.c.message.type),
    ).where(_c.uuid == bindparam("p_uuid")),
)
_ATTEMPTS = (
    select(attempts)
    .where(attempts.c.status_uuid == bindparam("p_uuid"))
    .order_by(attempts.c.number, attempts.c.id)
)


def _keys(result: Iterable[Any]) -> list[TaskKey]:
    """Rows of _KEY_COLUMNS, in that order."""
    return [
        TaskKey(task_id, uuid, parent_uuid, is_container)
        for task_id, uuid, parent_uuid, is_container in result
    ]


def _states(states: Iterable[State]) -> list[Any]:
    """State constants rendered inline: a prebuilt statement then needs no per-call
    expansion of an IN list (the values are taskstatus's own, never user input)."""
    return [literal_column(f"'{state.value}'") for state in sorted(states)]


_COUNT_BY_STATE = select(_c.state, func.count()).group_by(_c.state)
_OLDEST_IN_PROGRESS = select(func.min(func.coalesce(_c.attempt_started_at, _c.started_at))).where(
    _c.state == _states([State.IN_PROGRESS])[0], _c.is_container.is_(False)
)

_ACTIVE_BY_KEY = _state_by_key.in_(_states(ACTIVE_STATES))


_STRING = String()
_UTC = UTCDateTime()


class _Stamps:
    """The tasks of a batch chunk, each with its own time (and, for a run, its start), in the
    form a database joins fastest, by ``form``:

    - ``json`` (SQLite): one JSON parameter, unpacked by ``json_each`` and joined on the task
      id (UPDATE .. FROM). A worker writes its batches from a thread of its own, and every
      bound parameter costs that thread Python work holding the GIL that the task loop wants;
      one parameter per chunk costs it one ``json.dumps``, and SQLite parses the rest while
      the GIL is released.
    - ``values`` (PostgreSQL): a ``VALUES`` list of bound parameters (``p_id<i>``, ``p_at<i>``,
      ``p_st<i>``), joined on the task id.
    - ``case`` (MySQL, MariaDB, whose multiple-table UPDATE does not keep the order of SET
      clauses): a ``CASE`` over the task ids gives each row its time, which costs the database
      a comparison per task for each row.

    With bound parameters per task, a chunk is padded with rows that match no task, to a power
    of two, so that ten statements serve every size: each is compiled once per process, and
    compiling one costs about as much as writing a few hundred rows (it renders every bound
    parameter), which a worker that writes a batch of another size every interval would
    otherwise pay again and again. The ``json`` form has one statement for every size."""

    _made: dict[tuple[int, bool, str], _Stamps] = {}  # noqa: RUF012 (immutable once made)

    def __init__(self, size: int, started: bool, form: str) -> None:
        self.size = size
        self.form = form
        self._id_names = [f"p_id{i}" for i in range(size)]
        self._at_names = [f"p_at{i}" for i in range(size)]
        self._start_names = [f"p_st{i}" for i in range(size)]
        # One type object for all: a type caches its dialect's implementation, so the
        # compiler adapts it once instead of once per parameter.
        ids = [bindparam(name, type_=_STRING) for name in self._id_names]
        at = [bindparam(name, type_=_UTC) for name in self._at_names]
        begun = [bindparam(name, type_=_UTC) for name in self._start_names]
        self.which: ColumnElement[bool]
        self.at: ColumnElement[Any]
        self.started: ColumnElement[Any] | None
        if form == "case":
            self.which = _c.task_id.in_(ids)
            self.at = case(*[(_c.task_id == i, t) for i, t in zip(ids, at, strict=True)])
            self.started = (
                case(*[(_c.task_id == i, t) for i, t in zip(ids, begun, strict=True)])
                if started
                else None
            )
        else:
            columns: list[ColumnClause[Any]] = [
                column("column1", _STRING),
                column("column2", _UTC),
            ]
            if started:
                columns.append(column("column3", _UTC))
            if form == "json":
                picked = ", ".join(
                    f"json_extract(value, '$[{i}]') AS {c.name}" for i, c in enumerate(columns)
                )
                rows = text(f"SELECT {picked} FROM json_each(:p_rows)")
            else:
                row = "(:p_id{0}, :p_at{0}, :p_st{0})" if started else "(:p_id{0}, :p_at{0})"
                rows = text("VALUES " + ", ".join(row.format(i) for i in range(size)))
                rows = rows.bindparams(*ids, *at, *(begun if started else ()))
            values = rows.columns(*columns).subquery("v")
            self.which = _c.task_id == values.c.column1
            self.at = values.c.column2
            self.started = values.c.column3 if started else None
        #: The statuses of the chunk that its write changed to ``p_state``.
        self.written = select(*_KEY_COLUMNS).where(
            self.which, _c.modified == self.at, _state_by_key == bindparam("p_state")
        )
        #: The statuses of the chunk that have a parent (given the chunk's parameters).
        self.contained = select(*_KEY_COLUMNS).where(
            self.which, _Unindexed(_c.parent_uuid).is_not(None)
        )

    @classmethod
    def sized(cls, count: int, started: bool, form: str) -> _Stamps:
        size = 0 if form == "json" else 1 << (count - 1).bit_length()
        key = (size, started, form)
        stamps = cls._made.get(key)
        if stamps is None:
            stamps = cls._made[key] = cls(*key)
        return stamps

    def params(
        self,
        task_ids: Sequence[str],
        at: Mapping[str, datetime],
        began: Mapping[str, datetime] | None,
    ) -> dict[str, Any]:
        if self.form == "json":
            if began is None:
                rows = [[i, sqlite_text(at[i])] for i in task_ids]
            else:
                rows = [[i, sqlite_text(at[i]), sqlite_text(began[i])] for i in task_ids]
            return {"p_rows": json.dumps(rows)}
        padding = [None] * (self.size - len(task_ids))
        params: dict[str, str | datetime | None] = dict(
            zip(self._id_names, [*task_ids, *padding], strict=True)
        )
        params.update(zip(self._at_names, [*(at[i] for i in task_ids), *padding], strict=True))
        if began is not None:
            times = [*(began[i] for i in task_ids), *padding]
            params.update(zip(self._start_names, times, strict=True))
        return params


def _transition_statement(
    transition: Transition,
    which: ColumnElement[bool],
    now: ColumnElement[Any] = _NOW,
    started: ColumnElement[Any] | None = None,
) -> Update:
    """The conditional UPDATE for ``transition`` of the statuses ``which`` selects at
    ``now`` (by default the parameter ``p_now``; ``started``: the start of a run)."""
    # MySQL evaluates SET clauses left to right on the updated row: the clauses that read the
    # old state and counters come before the ones that overwrite them.
    values: list[tuple[Any, Any]] = []
    if transition.attempts is Attempts.INCREMENT:
        values.append((_c.attempts, _c.attempts + 1))
    elif transition.attempts is Attempts.INCREMENT_IF_RUNNING:
        values.append(
            (
                _c.attempts,
                case((_c.state == State.IN_PROGRESS.value, _c.attempts + 1), else_=_c.attempts),
            )
        )
    if transition.steps is Steps.RESTART:
        values += [(_c.completed_steps, 0), (_c.total_steps, _c.planned_steps)]
    elif transition.steps is Steps.COMPLETE:
        values.append((_c.completed_steps, _c.total_steps))
    elif transition.steps is Steps.PLANNED:
        values += [(_c.completed_steps, _c.planned_steps), (_c.total_steps, _c.planned_steps)]
    if transition.set_started:
        began = now if started is None else started
        values += [
            (_c.started_at, func.coalesce(_c.started_at, began)),
            (_c.attempt_started_at, began),
        ]
    if transition.set_finished:
        values.append((_c.finished_at, now))
    if transition.clear_stage:
        values.append((_c.stage, None))
    if transition.set_heartbeat:
        values.append((_c.heartbeat_at, now))
    values += [(_c.modified, now), (_c.state, transition.target.value)]
    return (
        update(statuses)
        .where(which, _state_by_key.in_(_states(transition.sources)))
        .ordered_values(*values)
    )


def _add_steps_statement(completed: bool, total: bool) -> Update:
    values: dict[Any, Any] = {_c.modified: _NOW}
    if completed:
        values[_c.completed_steps] = _clamped_add(_c.completed_steps, bindparam("p_completed"))
    if total:
        values[_c.total_steps] = _clamped_add(_c.total_steps, bindparam("p_total"))
    return (
        update(statuses)
        .where(_c.uuid == bindparam("p_uuid"), _c.state.not_in(_states(TERMINAL_STATES)))
        .values(values)
    )


_ADD_STEPS = {(a, b): _add_steps_statement(a, b) for a in (False, True) for b in (False, True)}
