"""Initial schema: statuses and artifacts.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from taskstatus.backends.tables import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "taskstatus_status",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("uuid", sa.Uuid(), nullable=False),
        sa.Column("task_id", sa.String(255), nullable=False),
        sa.Column("queue", sa.String(32), nullable=False),
        sa.Column("task_class", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=True),
        sa.Column("parent_uuid", sa.Uuid(), nullable=True),
        sa.Column("is_container", sa.Boolean(), nullable=False),
        sa.Column("sealed", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("stage", sa.String(255), nullable=True),
        sa.Column("completed_steps", sa.BigInteger(), nullable=False),
        sa.Column("total_steps", sa.BigInteger(), nullable=False),
        sa.Column("planned_steps", sa.BigInteger(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("traceback", sa.Text(), nullable=True),
        sa.Column("created", UTCDateTime(), nullable=False),
        sa.Column("modified", UTCDateTime(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_taskstatus_status"),
        sa.UniqueConstraint("uuid", name="uq_taskstatus_status_uuid"),
        sa.UniqueConstraint("task_id", name="uq_taskstatus_status_task_id"),
        sa.ForeignKeyConstraint(
            ["parent_uuid"],
            ["taskstatus_status.uuid"],
            name="fk_taskstatus_status_parent_uuid_taskstatus_status",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "ix_taskstatus_status_user_id_created", "taskstatus_status", ["user_id", "created"]
    )
    op.create_index("ix_taskstatus_status_parent_uuid", "taskstatus_status", ["parent_uuid"])
    op.create_index("ix_taskstatus_status_state_created", "taskstatus_status", ["state", "created"])
    op.create_index("ix_taskstatus_status_created", "taskstatus_status", ["created"])
    op.create_table(
        "taskstatus_artifact",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("uuid", sa.Uuid(), nullable=False),
        sa.Column("status_uuid", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("file", sa.String(1024), nullable=True),
        sa.Column("url", sa.String(2048), nullable=True),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("created", UTCDateTime(), nullable=False),
        sa.Column("modified", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_taskstatus_artifact"),
        sa.UniqueConstraint("uuid", name="uq_taskstatus_artifact_uuid"),
        sa.ForeignKeyConstraint(
            ["status_uuid"],
            ["taskstatus_status.uuid"],
            name="fk_taskstatus_artifact_status_uuid_taskstatus_status",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_taskstatus_artifact_status_uuid", "taskstatus_artifact", ["status_uuid"])


def downgrade() -> None:
    op.drop_table("taskstatus_artifact")
    op.drop_table("taskstatus_status")
