"""Alembic environment: runs on the connection `storage.migrate` hands over.

Conjure applies migrations from inside its own event loop (at the start of `serve` and `demo`),
so this env never creates an engine of its own; it borrows the sync side of an async connection.
"""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import storage.models  # noqa: F401  (registers the tables on SQLModel.metadata)

target_metadata = SQLModel.metadata
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
    context.run_migrations()
