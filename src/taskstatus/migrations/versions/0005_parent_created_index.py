"""Index statuses by parent, then creation time: the top-level list (``parent IS NULL``,
newest first, the dashboard's and ``GET tasks/?parent=none``) then reads one page of the
index instead of sorting every top-level row. It replaces the index on ``parent_uuid`` alone,
which its leading column still serves (a container's children, the foreign key).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The new index first: MySQL/MariaDB keep an index on a foreign key's column at all times.
    op.create_index(
        "ix_taskstatus_status_parent_uuid_created", "taskstatus_status", ["parent_uuid", "created"]
    )
    op.drop_index("ix_taskstatus_status_parent_uuid", table_name="taskstatus_status")


def downgrade() -> None:
    op.create_index("ix_taskstatus_status_parent_uuid", "taskstatus_status", ["parent_uuid"])
    op.drop_index("ix_taskstatus_status_parent_uuid_created", table_name="taskstatus_status")
