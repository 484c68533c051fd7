"""safety rules: a workspace's banned words and patterns

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    text = sqlmodel.sql.sqltypes.AutoString
    op.create_table(
        "safety_rule",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("platform", text(length=32), nullable=False),
        sa.Column("workspace", text(length=64), nullable=False),
        sa.Column("kind", text(length=16), nullable=False),
        sa.Column("value", text(length=200), nullable=False),
        sa.Column("created_by", text(length=200), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("platform", "workspace", "kind", "value", name="uq_safety_rule_key"),
    )


def downgrade() -> None:
    op.drop_table("safety_rule")
