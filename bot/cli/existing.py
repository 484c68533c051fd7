"""The database a report reads must already exist.

`conjure jobs` and `conjure report` read what serve recorded. Run where serve does not (another
directory, CONJURE_DATABASE_URL not set), they made a new, empty SQLite file there and said
"(no jobs)" and no spend however much had run: an answer that looks true. A SQLite file that is
not there is said instead; PostgreSQL's database exists or the connection says it does not.
"""

from __future__ import annotations

from bot.config import ConfigError
from storage.urls import sqlite_file


def require_recorded(url: str) -> None:
    """ConfigError when `url` is a SQLite file that does not exist (nothing was served with it)."""
    path = sqlite_file(url)
    if path is not None and not path.exists():
        raise ConfigError(
            f"CONJURE_DATABASE_URL: no database at {path.resolve()} (nothing has been served "
            "with it): run this where conjure serve runs, or set CONJURE_DATABASE_URL to its"
        )
