"""money in BIGINT: micro-dollar columns past $2,147.48 (2^31 - 1 micro-dollars)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, column, nullable): every column that holds micro-dollars.
MONEY_COLUMNS = (
    ("job", "estimated_micros", False),
    ("job", "actual_micros", True),
    ("usage_counter", "reserved_micros", False),
    ("usage_counter", "spent_micros", False),
    ("quota_override", "usd_per_month_micros", True),
    ("budget_alert", "spent_micros", False),
    ("budget_alert", "limit_micros", False),
)


def _alter(old: sa.types.TypeEngine, new: sa.types.TypeEngine) -> None:
    # PostgreSQL's INTEGER is 32-bit: widened in place (ALTER COLUMN ... TYPE BIGINT, which
    # rewrites each table once). SQLite's INTEGER already stores 64 bits; its tables are rebuilt
    # in a batch only so that the declared types match the models, as on every other database.
    tables: dict[str, list[tuple[str, bool]]] = {}
    for table, column, nullable in MONEY_COLUMNS:
        tables.setdefault(table, []).append((column, nullable))
    for table, columns in tables.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for column, nullable in columns:
                batch_op.alter_column(
                    column, existing_type=old, type_=new, existing_nullable=nullable
                )


def upgrade() -> None:
    _alter(sa.Integer(), sa.BigInteger())


def downgrade() -> None:
    # Fails (as it should) where an amount no longer fits in 32 bits.
    _alter(sa.BigInteger(), sa.Integer())
