"""Alembic glue: the schema comes only from the migrations shipped in ``taskstatus/migrations``.

An empty database is migrated to head on first use; a database at an older revision is left
alone and refused with :class:`~taskstatus.SchemaOutdated` until ``taskstatus db upgrade``.
"""

from __future__ import annotations

from importlib.resources import files

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Engine, inspect
from sqlalchemy import exc as sa_exc

from ..exceptions import SchemaOutdated
from .tables import VERSION_TABLE, statuses

__all__ = ["current_revision", "ensure_schema", "head_revision", "is_empty", "upgrade"]


def alembic_config(engine: Engine | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(files("taskstatus") / "migrations"))
    config.attributes["engine"] = engine
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()


def is_empty(engine: Engine) -> bool:
    """True when the database holds none of taskstatus's tables: nothing was recorded there."""
    return current_revision(engine) is None and not inspect(engine).has_table(statuses.name)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Run the migrations up to ``revision`` (``taskstatus db upgrade``)."""
    command.upgrade(alembic_config(engine), revision)


def _known(revision: str) -> bool:
    try:
        return ScriptDirectory.from_config(alembic_config()).get_revision(revision) is not None
    except CommandError:
        return False


def ensure_schema(engine: Engine) -> None:
    revision = current_revision(engine)
    head = head_revision()
    if revision == head:
        return
    if revision is None:
        if inspect(engine).has_table(statuses.name):
            raise SchemaOutdated(
                f"table {statuses.name} exists but carries no taskstatus schema version "
                f"({VERSION_TABLE} is missing); it was not created by taskstatus"
            )
        try:
            upgrade(engine)
        except sa_exc.DBAPIError:
            # Another process may have created the schema at the same moment.
            if current_revision(engine) != head:
                raise
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
