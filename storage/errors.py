"""What a database that does not answer raises, wherever Conjure asks it something.

SQLAlchemy wraps what its drivers raise while a statement runs (a dropped connection, a lock
past its timeout, SQLite's busy file), but not everything raised while connecting: asyncpg
raises ConnectionRefusedError (an OSError) at a server that is restarting, and a TimeoutError at
one that does not answer. All of them mean the same to a person: try again in a minute.
"""

from __future__ import annotations

from sqlalchemy.exc import SQLAlchemyError

UNANSWERED: tuple[type[BaseException], ...] = (SQLAlchemyError, OSError, TimeoutError)
