"""Apply the Alembic migrations to the configured database (`conjure migrate`, and at start-up)."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.engine import unbounded

MIGRATIONS = Path(__file__).parent / "migrations"

# Alembic announces each of its plugins at INFO when it is imported: seven lines of noise at the
# top of every `conjure serve` log. Its migration lines ("Running upgrade ...") still show.
logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


class DatabaseAhead(RuntimeError):
    """The database records a revision these migrations do not know (a newer Conjure migrated
    it, or another application's Alembic did): refused before Alembic's "Can't locate
    revision", which reads as a broken database URL."""


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


@functools.cache
def head_revisions() -> frozenset[str]:
    """The revisions a database at head records (read from the scripts once per process)."""
    return frozenset(ScriptDirectory.from_config(alembic_config()).get_heads())


def _at(connection: Connection, revision: str) -> bool:
    """Whether the database already records `revision` ("head": the newest), so Alembic, which
    reads and compiles every migration script on each run, need not be started at all."""
    wanted = head_revisions() if revision == "head" else frozenset({revision})
    current = MigrationContext.configure(connection).get_current_heads()
    return frozenset(current) == wanted


def _upgrade(connection: Connection, revision: str) -> list[str]:
    if _at(connection, revision):
        return []
    before = MigrationContext.configure(connection).get_current_heads()
    config = alembic_config()
    scripts = ScriptDirectory.from_config(config)
    known = {script.revision for script in scripts.walk_revisions()}
    unknown = sorted(set(before) - known)
    if unknown:
        raise DatabaseAhead(
            f"the database's schema is at revision {', '.join(unknown)}, which this Conjure "
            f"(at {', '.join(sorted(head_revisions()))}) does not know: a newer Conjure "
            "migrated it (run that version, or restore a backup from before it), or the "
            "database belongs to another application (give Conjure its own)."
        )
    unbounded(connection)  # no lock or statement timeout for the migration (storage.engine)
    config.attributes["connection"] = connection
    command.upgrade(config, revision)
    after = MigrationContext.configure(connection).get_current_heads()
    applied = scripts.iterate_revisions(after, before or "base")  # newest first
    return [script.revision for script in reversed(list(applied))]


async def migrate(engine: AsyncEngine, revision: str = "head") -> list[str]:
    """Bring the schema up to `revision` in one transaction (PostgreSQL DDL is transactional).

    Returns the revisions it applied, oldest first (none when the database was already there).
    """
    async with engine.begin() as connection:
        return await connection.run_sync(_upgrade, revision)
