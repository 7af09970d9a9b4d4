"""Whether a container runs its children one after another (``sequential``), stored with it:
the rules that follow from it (a failed step cancels the waiting ones, a step's stage shows on
its container) then hold in every process, also one that never imports the container's queue
adapter, and for a third-party adapter's own kinds.

Existing statuses get it from their kind: the chains, chords and pipelines that taskstatus's
adapters recorded are sequential, every other status is not.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

#: The sequential kinds of container before the adapters declared them.
_SEQUENTIAL_KINDS = ("celery.chain", "celery.chord", "dramatiq.pipeline")

# recreate="never": SQLite alters the table in place (DROP COLUMN since SQLite 3.35). A batch
# that copies it (as a server default that is an expression would make it) drops the old
# table, and with foreign keys on that deletes every status's children and artifacts.


def upgrade() -> None:
    with op.batch_alter_table("taskstatus_status", recreate="never") as batch:
        batch.add_column(
            sa.Column("sequential", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    status = sa.table(
        "taskstatus_status",
        sa.column("task_class", sa.String()),
        sa.column("sequential", sa.Boolean()),
    )
    op.execute(
        status.update().where(status.c.task_class.in_(_SEQUENTIAL_KINDS)).values(sequential=True)
    )


def downgrade() -> None:
    with op.batch_alter_table("taskstatus_status", recreate="never") as batch:
        batch.drop_column("sequential")
