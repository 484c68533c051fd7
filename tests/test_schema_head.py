"""storage.schema_head: a database already at head is served without loading Alembic, and
anything else still goes through Alembic's migrations."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from storage.engine import create_engine
from storage.migrate import head_revisions, migrate
from storage.schema_head import HEADS, at_head, migrate_unless_at_head


def test_heads_are_the_newest_migration() -> None:
    # A new migration must move HEADS too, or every start would run Alembic for nothing.
    assert HEADS == head_revisions()


async def test_only_a_database_at_the_newest_revision_is_at_head(empty_database_url: str) -> None:
    engine = create_engine(empty_database_url)
    try:
        assert not await at_head(engine)  # no tables at all yet
        await migrate(engine, "0010")
        assert not await at_head(engine)  # one migration behind
        assert await migrate_unless_at_head(engine) == ["0011"]
        assert await at_head(engine)
        assert await migrate_unless_at_head(engine) == []
    finally:
        await engine.dispose()


def _modules_loaded_by_serving(database_url: str) -> set[str]:
    """Which of Alembic, Mako and Jinja2 a process that imports what `conjure serve` imports has
    loaded, once it has brought `database_url` to head."""
    code = f"""
        import asyncio, sys
        import adapters.platforms, bot.app, bot.cli.main, bot.runtime
        from storage.engine import create_engine
        from storage.schema_head import migrate_unless_at_head

        async def main():
            engine = create_engine({database_url!r})
            await migrate_unless_at_head(engine)
            await engine.dispose()

        asyncio.run(main())
        print(" ".join(name for name in ("alembic", "mako", "jinja2") if name in sys.modules))
    """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return set(done.stdout.split())


def test_serving_a_database_at_head_never_loads_alembic(sqlite_url: str, tmp_path: Path) -> None:
    """Nor Jinja2, until the admin page is first shown (a tenth of serve's imports)."""
    assert _modules_loaded_by_serving(sqlite_url) == set()
    new = f"sqlite+aiosqlite:///{tmp_path / 'new.db'}"
    assert _modules_loaded_by_serving(new) == {"alembic", "mako"}  # it had to migrate
