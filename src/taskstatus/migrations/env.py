"""Alembic environment of taskstatus: runs on the engine handed in, under the schema lock (see
:func:`taskstatus.backends.migrate.schema_lock`), or on the connection of a caller that holds
the lock and commits itself."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from taskstatus.backends.migrate import schema_lock
from taskstatus.backends.tables import VERSION_TABLE, metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


given: Connection | None = context.config.attributes.get("connection")
engine = context.config.attributes.get("engine")
if given is not None:
    _run(given)
elif engine is not None:
    with schema_lock(engine) as connection:
        _run(connection)
else:
    raise RuntimeError("taskstatus migrations run through `taskstatus db upgrade`")
