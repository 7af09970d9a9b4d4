"""Alembic environment of taskstatus: runs against the engine handed in by the store, or on
the connection of a caller that holds the schema lock and commits itself."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

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
    with engine.connect() as connection:
        _run(connection)
        connection.commit()
else:
    raise RuntimeError("taskstatus migrations run through `taskstatus db upgrade`")
