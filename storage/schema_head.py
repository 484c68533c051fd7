"""Whether a database's schema is already at head, read without loading Alembic.

Alembic, with Mako and the Pygments lexers Mako's error pages bring, is about 9 MiB of a serving
process's memory (the bench's serve, idle: 104.6 MiB with it, 95.4 without), kept for the
process's whole life once loaded. A database already at head (a restart, or a deployment that
ran `conjure migrate` first) needs none of it: one query of `alembic_version` against the
revision this code ends at says so. Anything else (a new database, a migration to apply, an
unknown revision) goes to Alembic (storage.migrate), as before.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

HEADS = frozenset({"0011"})
"""The revisions a database at head records: the newest migration in storage/migrations
(tests/test_schema_head.py checks this against what Alembic reads from the scripts)."""


async def at_head(engine: AsyncEngine) -> bool:
    """Whether `engine`'s database records exactly HEADS. A database that cannot be reached
    raises here as it would in the migration; one without Alembic's table is not at head."""
    async with engine.connect() as connection:
        try:
            result = await connection.execute(text("SELECT version_num FROM alembic_version"))
        except DBAPIError:
            return False  # no alembic_version yet: a new database, which Alembic sets up
        return frozenset(result.scalars()) == HEADS


async def migrate_unless_at_head(engine: AsyncEngine) -> list[str]:
    """Bring the schema to head, loading Alembic only when there is something to apply;
    returns the revisions applied (storage.migrate.migrate), none when it was at head."""
    if await at_head(engine):
        return []
    from storage.migrate import migrate

    return await migrate(engine)
