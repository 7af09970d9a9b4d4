"""Retry history: a row per attempt that ended in a retry (``taskstatus_attempt``), and the
start of the current attempt on each status (``attempt_started_at``; ``started_at`` keeps the
first start).

Existing statuses have no history: their earlier attempts were only counted. A status still
on its first attempt gets ``attempt_started_at = started_at``.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from taskstatus.backends.tables import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("taskstatus_status") as batch:
        batch.add_column(sa.Column("attempt_started_at", UTCDateTime(), nullable=True))
    op.execute("UPDATE taskstatus_status SET attempt_started_at = started_at WHERE attempts = 1")
    op.create_table(
        "taskstatus_attempt",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("status_uuid", sa.Uuid(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("retried_at", UTCDateTime(), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_taskstatus_attempt"),
        sa.ForeignKeyConstraint(
            ["status_uuid"],
            ["taskstatus_status.uuid"],
            name="fk_taskstatus_attempt_status_uuid_taskstatus_status",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "ix_taskstatus_attempt_status_uuid_number", "taskstatus_attempt", ["status_uuid", "number"]
    )


def downgrade() -> None:
    op.drop_table("taskstatus_attempt")
    with op.batch_alter_table("taskstatus_status") as batch:
        batch.drop_column("attempt_started_at")
