"""Alembic glue: the schema comes only from the migrations shipped in ``taskstatus/migrations``.

An empty database is migrated to head on first use; a database at an older revision is left
alone and refused with :class:`~taskstatus.SchemaOutdated` until ``taskstatus db upgrade``.
Processes that find the same empty database at once (the workers of a first deployment) take
the database's own lock in turn: the first creates the schema, the others find it made.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.resources import files
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, column, inspect, select, table

from ..exceptions import SchemaOutdated
from .tables import VERSION_TABLE, statuses

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "current_revision",
    "ensure_schema",
    "head_revision",
    "is_empty",
    "schema_lock",
    "upgrade",
]


# Every process that opens a store imports Alembic, whose first import logs one INFO line per
# autogenerate plugin it registers: chatter at each worker start. Hence Alembic is imported
# here only when used, after this (an application's own level for that logger stays).
_plugins_log = logging.getLogger("alembic.runtime.plugins")
if _plugins_log.level == logging.NOTSET:
    _plugins_log.setLevel(logging.WARNING)

_version = table(VERSION_TABLE, column("version_num"))


def alembic_config(engine: Engine | None = None, connection: Connection | None = None) -> Config:
    """Alembic's configuration for our migrations, run on ``engine`` under the schema lock, or
    on ``connection``, whose holder has taken the lock and commits."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(files("taskstatus") / "migrations"))
    config.attributes["engine"] = engine
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The schema's revision, read from Alembic's version table without an Alembic migration
    context, which logs its set-up at INFO: every store opening would."""
    with engine.connect() as conn:
        return _revision(conn)


def _revision(conn: Connection) -> str | None:
    if not inspect(conn).has_table(VERSION_TABLE):
        return None
    revision: str | None = conn.execute(select(_version.c.version_num)).scalar_one_or_none()
    return revision


def is_empty(engine: Engine) -> bool:
    """True when the database holds none of taskstatus's tables: nothing was recorded there."""
    return current_revision(engine) is None and not inspect(engine).has_table(statuses.name)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Run the migrations up to ``revision`` (``taskstatus db upgrade``)."""
    with schema_lock(engine) as conn:
        _upgrade(conn, revision)


def _upgrade(conn: Connection, revision: str) -> None:
    from alembic import command

    command.upgrade(alembic_config(connection=conn), revision)


def _known(revision: str) -> bool:
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    try:
        return ScriptDirectory.from_config(alembic_config()).get_revision(revision) is not None
    except CommandError:
        return False


@contextmanager
def schema_lock(engine: Engine) -> Iterator[Connection]:
    """A connection holding the database's lock on schema changes until the block ends (and
    commits): SQLite's write lock, a PostgreSQL advisory lock per schema, a MariaDB/MySQL
    named lock per database. Another process asking waits for it.

    On SQLite, foreign keys are off meanwhile, as SQLite prescribes for rebuilding a table
    (Alembic's batch mode copies it and drops the old one: with them on, dropping it would
    delete every child status and artifact through ON DELETE CASCADE); they are checked
    before the commit."""
    with engine.connect() as conn:
        dialect = conn.dialect.name
        if dialect == "sqlite":
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")  # a no-op inside a transaction
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        elif dialect == "postgresql":
            conn.exec_driver_sql(
                "SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.taskstatus'))"
            )
        elif dialect in ("mysql", "mariadb"):
            got = conn.exec_driver_sql(f"SELECT GET_LOCK({_MYSQL_LOCK_NAME}, 60)").scalar()
            if got != 1:
                raise SchemaOutdated(
                    "another process has been changing the taskstatus schema for 60 s; "
                    "try again once it has finished"
                )
        try:
            yield conn
            if dialect == "sqlite":
                broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise SchemaOutdated(
                        f"the schema change would leave {len(broken)} rows pointing at rows "
                        f"that do not exist (first: {tuple(broken[0])}); nothing was changed"
                    )
            conn.commit()
        finally:
            if dialect == "sqlite":
                conn.rollback()
                conn.exec_driver_sql("PRAGMA foreign_keys=ON")
            elif dialect in ("mysql", "mariadb"):
                conn.exec_driver_sql(f"SELECT RELEASE_LOCK({_MYSQL_LOCK_NAME})")


#: A lock name per database, under MySQL's 64-character limit for lock names.
_MYSQL_LOCK_NAME = "CONCAT('taskstatus:', SHA1(IFNULL(DATABASE(), '')))"


def ensure_schema(engine: Engine) -> None:
    head = head_revision()
    if current_revision(engine) == head:
        return
    with schema_lock(engine) as conn:
        # Read again under the lock: another process may have just created it.
        revision = _revision(conn)
        if revision == head:
            return
        if revision is None:
            if inspect(conn).has_table(statuses.name):
                raise SchemaOutdated(
                    f"table {statuses.name} exists but carries no taskstatus schema version "
                    f"({VERSION_TABLE} is missing); it was not created by taskstatus"
                )
            _upgrade(conn, "head")
            return
    if not _known(revision):
        raise SchemaOutdated(
            f"the database schema is at revision {revision}, which this version of taskstatus "
            f"does not know (newer than {head}); upgrade taskstatus"
        )
    raise SchemaOutdated(
        f"the database schema is at revision {revision}, this taskstatus needs {head}: "
        f"run `taskstatus db upgrade`"
    )
