"""Alembic environment of taskstatus: runs against the engine handed in by the store."""

from __future__ import annotations

from alembic import context

from taskstatus.backends.tables import VERSION_TABLE, metadata

engine = context.config.attributes.get("engine")
if engine is None:
    raise RuntimeError("taskstatus migrations run through `taskstatus db upgrade`")

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
