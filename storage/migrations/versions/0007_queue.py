"""job.waiting_since and job.queue_ahead: a queue at the jobs-in-flight limit

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("waiting_since", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True)
        )
        batch_op.add_column(sa.Column("queue_ahead", sa.Integer(), nullable=True))
        batch_op.create_index("ix_job_waiting", ["platform", "workspace", "waiting_since"])


def downgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_index("ix_job_waiting")
        batch_op.drop_column("queue_ahead")
        batch_op.drop_column("waiting_since")
