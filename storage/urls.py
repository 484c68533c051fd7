"""Database URLs as people write them, mapped to the async drivers Conjure uses.

Apart from the engine so that checking a setting (every `conjure` start) needs no SQLAlchemy.
"""

from __future__ import annotations

from pathlib import Path

_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}


def normalize_database_url(url: str) -> str:
    """Map `sqlite:///x.db` and `postgresql://...` to their async drivers; refuse anything else."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in _DRIVERS:
        raise ValueError(
            "must be a sqlite:/// or postgresql:// URL (e.g. sqlite+aiosqlite:///conjure.db)"
        )
    return f"{_DRIVERS[scheme]}://{rest}"


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names; None for another database, or one in memory."""
    from sqlalchemy.engine import make_url  # here: checking a setting needs no SQLAlchemy

    parsed = make_url(normalize_database_url(url))
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)
