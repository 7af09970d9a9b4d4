"""Worker heartbeats: detect tasks whose worker died.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from taskstatus.backends.tables import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("taskstatus_status") as batch:
        batch.add_column(sa.Column("heartbeat_at", UTCDateTime(), nullable=True))
        batch.add_column(
            sa.Column("redeliver_on_loss", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("taskstatus_status") as batch:
        batch.drop_column("redeliver_on_loss")
        batch.drop_column("heartbeat_at")
