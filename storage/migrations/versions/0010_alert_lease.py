"""budget_alert.claimed_until: an alert's claim is a lease, so a sender killed mid-post loses none

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Alerts claimed before this column were marked sent at their claim: they stay sent, as then.
    with op.batch_alter_table("budget_alert", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("claimed_until", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("budget_alert", schema=None) as batch_op:
        batch_op.drop_column("claimed_until")
