"""Index canceled statuses by modification time: workers poll for work canceled before it
started (a partial index where the database has them, so other writes do not pay for it).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    canceled = sa.text("state = 'Canceled'")
    op.create_index(
        "ix_taskstatus_status_canceled",
        "taskstatus_status",
        ["state", "modified"],
        postgresql_where=canceled,
        sqlite_where=canceled,
    )


def downgrade() -> None:
    op.drop_index("ix_taskstatus_status_canceled", table_name="taskstatus_status")
