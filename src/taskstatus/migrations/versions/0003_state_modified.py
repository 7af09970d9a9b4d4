"""Index statuses by (state, modified): workers poll for tasks canceled before they started.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_taskstatus_status_state_modified", "taskstatus_status", ["state", "modified"]
    )


def downgrade() -> None:
    op.drop_index("ix_taskstatus_status_state_modified", table_name="taskstatus_status")
