"""ended_admin_session: admin sessions ended by logging out, refused on every instance

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-08
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ended_admin_session",
        sa.Column("session_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("valid_until", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("session_hash"),
    )
    op.create_index("ix_ended_admin_session_valid_until", "ended_admin_session", ["valid_until"])


def downgrade() -> None:
    op.drop_index("ix_ended_admin_session_valid_until", table_name="ended_admin_session")
    op.drop_table("ended_admin_session")
