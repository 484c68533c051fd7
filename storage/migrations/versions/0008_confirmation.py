"""confirmation: commands waiting for their person to confirm the price

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    text = sqlmodel.sql.sqltypes.AutoString
    op.create_table(
        "confirmation",
        sa.Column("id", text(length=32), nullable=False),
        sa.Column("platform", text(length=32), nullable=False),
        sa.Column("workspace", text(length=64), nullable=False),
        sa.Column("channel", text(length=64), nullable=False),
        sa.Column("user_id", text(length=64), nullable=False),
        sa.Column("user_name", text(length=128), nullable=True),
        sa.Column("parent_id", text(length=32), nullable=True),
        sa.Column("followup", text(length=16), nullable=True),
        sa.Column("command", text(length=32), nullable=False),
        sa.Column("model", text(length=64), nullable=False),
        sa.Column("prompt", text(), nullable=False),
        sa.Column("input", sa.JSON(), nullable=False),
        sa.Column("outputs", sa.Integer(), nullable=False),
        sa.Column("estimate_micros", sa.BigInteger(), nullable=False),
        sa.Column("status", text(length=16), nullable=False),
        sa.Column("job_id", text(length=32), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("expires_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_confirmation_expires", "confirmation", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_confirmation_expires", table_name="confirmation")
    op.drop_table("confirmation")
