"""What a database that does not answer raises, wherever Conjure asks it something.

SQLAlchemy wraps what its drivers raise while a statement runs (a dropped connection, a lock
past its timeout, SQLite's busy file), but not everything raised while connecting: asyncpg
raises ConnectionRefusedError (an OSError) at a server that is restarting, and a TimeoutError at
one that does not answer. All of them mean the same to a person: try again in a minute.
"""

from __future__ import annotations

from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    NotSupportedError,
    ProgrammingError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout

UNANSWERED: tuple[type[BaseException], ...] = (SQLAlchemyError, OSError, TimeoutError)

# What the database refuses because of how it was asked (SQL it cannot run, a value or key it
# will not take): Conjure's mistake, not an outage, and worth its traceback in the log.
MISTAKES: tuple[type[BaseException], ...] = (
    ProgrammingError,
    IntegrityError,
    DataError,
    NotSupportedError,
)


def is_outage(error: BaseException) -> bool:
    """Whether `error` is the database not answering (a restart, a failover, a lock past its
    timeout) rather than a mistake in what was asked: an outage is a line in the log, a mistake
    keeps its traceback."""
    if isinstance(error, OSError | TimeoutError | PoolTimeout):
        return True  # PoolTimeout: every pooled connection busy past the pool's wait
    return isinstance(error, DBAPIError) and not isinstance(error, MISTAKES)
