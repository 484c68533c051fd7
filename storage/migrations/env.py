"""Alembic environment: runs on the connection `storage.migrate` hands over.

Conjure applies migrations from inside its own event loop (at the start of `serve` and `demo`),
so this env never creates an engine of its own; it borrows the sync side of an async connection.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import text
from sqlmodel import SQLModel

import storage.models  # noqa: F401  (registers the tables on SQLModel.metadata)

target_metadata = SQLModel.metadata
# Instances started together on one PostgreSQL database each migrate it: one at a time, or the
# second creates the same tables again (or finds the revision it meant to move already moved)
# and dies. The lock belongs to the migrating transaction, so it goes with the commit, and the
# next one then reads the new revision and has nothing to do. (On SQLite, BEGIN IMMEDIATE
# already lets one writer in at a time.)
MIGRATION_LOCK = 0x636F6E6A75726531  # "conjure1": any constant every instance shares
connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `conjure migrate` (storage.migrate)")

context.configure(
    connection=connection,
    target_metadata=target_metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
    context.run_migrations()
