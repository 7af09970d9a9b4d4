"""The change feed: each status row carries the database's time of its last write
(``changed``, indexed) and a count of its writes (``version``); on PostgreSQL a statement
trigger NOTIFYs ``taskstatus_changes`` so that followers wake up instead of polling.

Existing rows start at ``changed = modified``, ``version = 1``.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from taskstatus.backends.tables import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_NOTIFY_FUNCTION = """
CREATE FUNCTION taskstatus_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('taskstatus_changes', '');
    RETURN NULL;
END
$$
"""
# Once per statement, not per row: a batch of a thousand rows costs one notification, and
# notifications of one transaction are sent once, at commit.
_NOTIFY_TRIGGER = """
CREATE TRIGGER taskstatus_status_notify AFTER INSERT OR UPDATE ON taskstatus_status
FOR EACH STATEMENT EXECUTE FUNCTION taskstatus_notify_change()
"""


def upgrade() -> None:
    with op.batch_alter_table("taskstatus_status") as batch:
        batch.add_column(sa.Column("changed", UTCDateTime(), nullable=True))
        batch.add_column(
            sa.Column("version", sa.BigInteger(), nullable=False, server_default=sa.text("1"))
        )
    op.execute("UPDATE taskstatus_status SET changed = modified")
    with op.batch_alter_table("taskstatus_status") as batch:
        batch.alter_column("changed", existing_type=UTCDateTime(), nullable=False)
    op.create_index("ix_taskstatus_status_changed", "taskstatus_status", ["changed"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_NOTIFY_FUNCTION)
        op.execute(_NOTIFY_TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER taskstatus_status_notify ON taskstatus_status")
        op.execute("DROP FUNCTION taskstatus_notify_change()")
    op.drop_index("ix_taskstatus_status_changed", table_name="taskstatus_status")
    with op.batch_alter_table("taskstatus_status") as batch:
        batch.drop_column("version")
        batch.drop_column("changed")
