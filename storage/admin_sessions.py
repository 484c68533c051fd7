"""Admin page sessions ended by logging out (storage.models.EndedAdminSession).

The session cookie is signed, not stored: without this table a copy of it stayed good for the
rest of its 12 hours after its person logged out. A logout writes the session here and every
instance on the database reads it before accepting the cookie (bot.admin.auth).

A row is kept until KEPT_AFTER past the moment its cookie lapses anyway, then deleted at a later
logout: the table holds about a day and a half of logouts, and needs no sweeper.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.engine import reader, write
from storage.models import EndedAdminSession, utcnow

# A cookie's age is judged by its instance's clock, the deletion by the database's: a day's
# margin keeps a row for as long as any instance, however far its clock is off, takes the
# cookie for unexpired.
KEPT_AFTER = timedelta(days=1)

_TABLE = EndedAdminSession.__table__  # type: ignore[attr-defined]


class EndedSessions:
    """Reads and writes of ended admin sessions, on the jobs' engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.reader = reader(engine)

    async def end(self, session_hash: str, valid_until: datetime) -> None:
        """Record a session as ended (again is no error: two logouts at once), and forget
        those long lapsed."""
        insert = pg_insert if self.engine.dialect.name == "postgresql" else sqlite_insert
        statement = (
            insert(_TABLE)
            .values(session_hash=session_hash, valid_until=valid_until)
            .on_conflict_do_nothing(index_elements=["session_hash"])
        )
        async with write(self.engine) as conn:
            await conn.execute(statement)
            await conn.execute(delete(_TABLE).where(_TABLE.c.valid_until < utcnow() - KEPT_AFTER))

    async def ended(self, session_hash: str) -> bool:
        """Whether the session was ended: one read by primary key."""
        statement = select(_TABLE.c.session_hash).where(_TABLE.c.session_hash == session_hash)
        async with self.reader.connect() as conn:
            return (await conn.execute(statement)).first() is not None
