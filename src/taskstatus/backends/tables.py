"""Table definitions shared by the SQLAlchemy store and the Alembic migrations."""

from __future__ import annotations

import weakref
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    Uuid,
    literal_column,
    text,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

__all__ = [
    "DatabaseNow",
    "UTCDateTime",
    "artifacts",
    "attempts",
    "metadata",
    "sqlite_text",
    "statuses",
]

#: Alembic's version table for taskstatus, apart from the application's own migrations.
VERSION_TABLE = "taskstatus_alembic_version"

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


#: UTCDateTime's implementation type, by dialect.
_impls: weakref.WeakKeyDictionary[Dialect, Any] = weakref.WeakKeyDictionary()


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored as naive UTC (microsecond precision everywhere), read back aware."""

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        # Made once per dialect: SQLAlchemy asks again for every bound parameter it renders
        # (a batched write has hundreds), and each answer would be a new adapted type.
        impl = _impls.get(dialect)
        if impl is None:
            mysql_like = dialect.name in ("mysql", "mariadb")
            impl = dialect.type_descriptor(mysql.DATETIME(fsp=6) if mysql_like else DateTime())
            _impls[dialect] = impl
        return impl

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        return value

    def bind_processor(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return sqlite_text
        return super().bind_processor(dialect)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value


def sqlite_text(value: datetime | None) -> str | None:
    """A timestamp as SQLAlchemy's SQLite ``DATETIME`` stores it ("2026-03-15 12:05:57.105542",
    naive UTC), in one call: a worker's batched write binds two per task, and SQLAlchemy's
    own formatting costs several times more, all of it holding the GIL."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc)
    # Without the "+00:00" of an aware one: four digits of year always, so always 26.
    return value.isoformat(" ", "microseconds")[:26]


class DatabaseNow(FunctionElement[datetime]):
    """The database server's clock when the row is written, as naive UTC with microseconds
    (SQLite: the host's clock, in milliseconds): the stamp of the change feed, which must not
    depend on the writers' clocks or on how late a worker writes its batch."""

    type = UTCDateTime()
    inherit_cache = True


@compiles(DatabaseNow)
def _database_now(element: DatabaseNow, compiler: SQLCompiler, **kw: Any) -> str:
    return "UTC_TIMESTAMP(6)"  # MySQL, MariaDB


@compiles(DatabaseNow, "postgresql")
def _database_now_postgresql(element: DatabaseNow, compiler: SQLCompiler, **kw: Any) -> str:
    # clock_timestamp(), not now(): the time of this row's write, not of the transaction start.
    return "(clock_timestamp() AT TIME ZONE 'UTC')"


@compiles(DatabaseNow, "sqlite")
def _database_now_sqlite(element: DatabaseNow, compiler: SQLCompiler, **kw: Any) -> str:
    # Six digits of fraction, the format SQLAlchemy writes and reads back.
    return "strftime('%Y-%m-%d %H:%M:%f000', 'now')"


_Id = BigInteger().with_variant(Integer(), "sqlite")

statuses = Table(
    "taskstatus_status",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("uuid", Uuid(), nullable=False, unique=True),
    Column("task_id", String(255), nullable=False, unique=True),
    Column("queue", String(32), nullable=False),
    Column("task_class", String(255), nullable=False),
    Column("name", String(255), nullable=False),
    Column("user_id", String(255), nullable=True),
    Column(
        "parent_uuid",
        Uuid(),
        ForeignKey("taskstatus_status.uuid", ondelete="CASCADE"),
        nullable=True,
    ),
    Column("is_container", Boolean(), nullable=False, default=False),
    Column("sealed", Boolean(), nullable=False, default=True),
    Column("state", String(16), nullable=False),
    Column("stage", String(255), nullable=True),
    Column("completed_steps", BigInteger(), nullable=False, default=0),
    Column("total_steps", BigInteger(), nullable=False, default=1),
    Column("planned_steps", BigInteger(), nullable=False, default=1),
    Column("attempts", Integer(), nullable=False, default=1),
    Column("traceback", Text(), nullable=True),
    Column("created", UTCDateTime(), nullable=False),
    Column("modified", UTCDateTime(), nullable=False),
    Column("started_at", UTCDateTime(), nullable=True),
    Column("finished_at", UTCDateTime(), nullable=True),
    Column("attempt_started_at", UTCDateTime(), nullable=True),
    Column("heartbeat_at", UTCDateTime(), nullable=True),
    Column("redeliver_on_loss", Boolean(), nullable=False, default=False),
    # Declared by the container's adapter (migration 0007): see TaskStatus.sequential.
    Column("sequential", Boolean(), nullable=False, default=False),
    # The change feed (taskstatus.changes): every write of a row stamps it with the database's
    # clock and counts it, without a round trip of its own.
    Column("changed", UTCDateTime(), nullable=False, default=DatabaseNow(), onupdate=DatabaseNow()),
    Column(
        "version",
        BigInteger(),
        nullable=False,
        default=1,
        onupdate=literal_column("version + 1"),
    ),
    Index("ix_taskstatus_status_user_id_created", "user_id", "created"),
    # A container's children, and the top-level list newest first (parent IS NULL).
    Index("ix_taskstatus_status_parent_uuid_created", "parent_uuid", "created"),
    Index("ix_taskstatus_status_state_created", "state", "created"),
    # Workers poll for work canceled before it started: only canceled rows need this index
    # (partial where the database can; MySQL/MariaDB index every row).
    Index(
        "ix_taskstatus_status_canceled",
        "state",
        "modified",
        postgresql_where=text("state = 'Canceled'"),
        sqlite_where=text("state = 'Canceled'"),
    ),
    Index("ix_taskstatus_status_created", "created"),
    Index("ix_taskstatus_status_changed", "changed"),
)

artifacts = Table(
    "taskstatus_artifact",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("uuid", Uuid(), nullable=False, unique=True),
    Column(
        "status_uuid",
        Uuid(),
        ForeignKey("taskstatus_status.uuid", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("name", String(255), nullable=False),
    Column("file", String(1024), nullable=True),
    Column("url", String(2048), nullable=True),
    Column("text", Text(), nullable=True),
    Column("created", UTCDateTime(), nullable=False),
    Column("modified", UTCDateTime(), nullable=False),
)

#: The retry history: one row per attempt that ended in a retry (migration 0006).
attempts = Table(
    "taskstatus_attempt",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column(
        "status_uuid",
        Uuid(),
        ForeignKey("taskstatus_status.uuid", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("number", Integer(), nullable=False),
    Column("started_at", UTCDateTime(), nullable=True),
    Column("retried_at", UTCDateTime(), nullable=False),
    Column("message", Text(), nullable=True),
    # A status's history is read by its uuid, in order.
    Index("ix_taskstatus_attempt_status_uuid_number", "status_uuid", "number"),
)
