"""Alembic glue: the schema comes only from the migrations shipped in ``taskstatus/migrations``.

An empty database is migrated to head on first use; a database at an older revision is left
alone and refused with :class:`~taskstatus.SchemaOutdated` until ``taskstatus db upgrade``.
"""

from __future__ import annotations

import logging
from importlib.resources import files
from typing import TYPE_CHECKING

from sqlalchemy import Engine, column, inspect, select, table
from sqlalchemy import exc as sa_exc

from ..exceptions import SchemaOutdated
from .tables import VERSION_TABLE, statuses

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = ["current_revision", "ensure_schema", "head_revision", "is_empty", "upgrade"]


# Every process that opens a store imports Alembic, whose first import logs one INFO line per
# autogenerate plugin it registers: chatter at each worker start. Hence Alembic is imported
# here only when used, after this (an application's own level for that logger stays).
_plugins_log = logging.getLogger("alembic.runtime.plugins")
if _plugins_log.level == logging.NOTSET:
    _plugins_log.setLevel(logging.WARNING)

_version = table(VERSION_TABLE, column("version_num"))


def alembic_config(engine: Engine | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(files("taskstatus") / "migrations"))
    config.attributes["engine"] = engine
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
        if not inspect(conn).has_table(VERSION_TABLE):
            return None
        revision: str | None = conn.execute(select(_version.c.version_num)).scalar_one_or_none()
        return revision


def is_empty(engine: Engine) -> bool:
    """True when the database holds none of taskstatus's tables: nothing was recorded there."""
    return current_revision(engine) is None and not inspect(engine).has_table(statuses.name)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Run the migrations up to ``revision`` (``taskstatus db upgrade``)."""
    from alembic import command

    command.upgrade(alembic_config(engine), revision)


def _known(revision: str) -> bool:
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

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
