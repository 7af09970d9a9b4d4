"""Every migration, up and down, keeps the statuses, their children, artifacts and retries.

On SQLite a migration that rebuilds a table (Alembic's batch mode copies it and drops the old
one) would delete every child status and artifact through ``ON DELETE CASCADE`` if foreign keys
were enforced meanwhile; schema changes run with them off, as SQLite prescribes for rebuilds.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory

from taskstatus import Settings, Tracker
from taskstatus.backends import migrate

from .helpers import event, publish

pytestmark = pytest.mark.timeout(180)

TABLES = ("taskstatus_status", "taskstatus_artifact")


def _counts(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {t: conn.exec_driver_sql(f"SELECT COUNT(*) FROM {t}").scalar_one() for t in TABLES}


def _revisions() -> list[str]:
    """Every revision, oldest first."""
    script = ScriptDirectory.from_config(migrate.alembic_config())
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def test_each_migration_down_and_up_keeps_every_row(sql_url):
    tracker = Tracker(Settings(url=sql_url, artifact_storage=None)).open()
    publish(tracker, "parent", container="taskstatus.group")
    child = publish(tracker, "child", parent="parent")
    tracker.add_artifact(child, text="made")
    tracker.lifecycle.start(event("child"))
    tracker.lifecycle.end(event("child"), exception=OSError("disk full"))  # an Error artifact
    engine = tracker.store.engine  # type: ignore[attr-defined]
    before = _counts(engine)
    assert before == {"taskstatus_status": 2, "taskstatus_artifact": 3}  # the group failed too
    revisions = _revisions()
    for down_to in reversed(revisions[:-1]):
        command.downgrade(migrate.alembic_config(engine), down_to)
        assert _counts(engine) == before, f"downgrade to {down_to}"
    for up_to in revisions[1:]:
        migrate.upgrade(engine, up_to)
        assert _counts(engine) == before, f"upgrade to {up_to}"
    tracker.close()
    tracker = Tracker(Settings(url=sql_url, artifact_storage=None)).open()
    kept = tracker.get_by_task_id("child")
    assert kept.parent_uuid == tracker.get_by_task_id("parent").uuid
    assert sorted(a.name for a in kept.artifacts) == ["Error", "Output"]
    tracker.close()
