"""SQLite for the job path: SQLAlchemy's synchronous engine, called straight from the event loop.

`storage.sqlite_inline` already runs SQLite on the event loop, but SQLAlchemy's async layer
still passes every step of a transaction (connect, begin, execute, commit, close) through a
greenlet switch to await a coroutine that never suspends: measured here, 0.25 ms of CPU for a
one-statement transaction through the async engine against 0.1 ms through the synchronous one,
several times per job. So `storage.engine.write` and `reader` hand out a `DirectConnection`: a
synchronous engine's connection on the same file, with the same settings (WAL, busy timeout,
`BEGIN IMMEDIATE` for writes, none for reads), behind the few awaitable methods the stores use.
The statements, results and transactions are the same; only the awaits are gone. Everything
else (migrations, tests, tools) keeps the async engine, on its own connections to the file.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

from sqlalchemy import create_engine, event, exc
from sqlalchemy.engine import Connection, Dialect, Engine

from storage.compiled_once import compiled_once
from storage.sqlite_inline import open_sqlite


def direct_engine(path: str, *, timeout: float, read_only_option: str) -> Engine:
    """A synchronous engine on `path` set up as storage.engine sets up the async one."""
    engine = create_engine("sqlite+pysqlite://", creator=lambda: open_sqlite(path, timeout=timeout))

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        if not connection.get_execution_options().get(read_only_option, False):
            # Straight to sqlite3: SQLAlchemy does not track BEGIN on SQLite (autocommit
            # connection), and its execution path would cost more than the statement.
            try:
                connection.connection.driver_connection.execute("BEGIN IMMEDIATE")  # type: ignore[union-attr]
            except sqlite3.Error as error:
                # Wrapped as SQLAlchemy's execution would ("database is locked" once the busy
                # timeout ran out: OperationalError), so callers that catch SQLAlchemy's
                # errors (the database unavailable: try again) catch this one too.
                raise exc.DBAPIError.instance(
                    "BEGIN IMMEDIATE", (), error, sqlite3.Error, dialect=connection.dialect
                ) from error

    return engine


class DirectConnection:
    """The awaitable face of a synchronous connection: what the stores call on a connection."""

    def __init__(self, connection: Connection) -> None:
        self.sync_connection = connection

    @property
    def dialect(self) -> Dialect:
        return self.sync_connection.dialect

    async def execute(self, statement: Any, parameters: Any = None, **kwargs: Any) -> Any:
        """Run `statement`: as SQL compiled once when it was built once (storage.compiled_once),
        else through SQLAlchemy."""
        connection = self.sync_connection
        if not kwargs:
            compiled = compiled_once(statement, connection.dialect, parameters)
            if compiled is not None:
                return compiled.run(connection, parameters)
        return connection.execute(statement, parameters, **kwargs)

    async def scalar(self, statement: Any, parameters: Any = None, **kwargs: Any) -> Any:
        return self.sync_connection.scalar(statement, parameters, **kwargs)

    async def commit(self) -> None:
        self.sync_connection.commit()

    async def rollback(self) -> None:
        self.sync_connection.rollback()


class _Kept:
    """One connection of `engine` kept checked out for the thread that opened it (the event
    loop's), instead of a checkout and check-in (with its reset) around every transaction or
    read. The pool already keeps one sqlite3 connection per thread (SQLAlchemy's
    SingletonThreadPool); what is saved is the checkout. One found broken is replaced."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._connection: Connection | None = None
        self._thread: int | None = None

    def here(self) -> Connection | None:
        """The kept connection, opened if need be; None on another thread than its own."""
        if self._thread is not None and self._thread != threading.get_ident():
            return None
        connection = self._connection
        if connection is None or connection.closed or connection.invalidated:
            self.close()
            connection = self._connection = self.engine.connect()
            self._thread = threading.get_ident()
        return connection

    def close(self) -> None:
        """Give the kept connection back (before the engine is disposed)."""
        connection, self._connection, self._thread = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()


class DirectReader:
    """`reader(engine)` on SQLite: `.connect()` for blocks that only read (no BEGIN is sent).

    One connection is kept for them: the checkout was about a fifth of a one-row read (0.015 of
    0.07 ms, measured here). A block that starts while another still holds it (they overlap
    only across an await) checks one out as before, as does one from another thread."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._kept = _Kept(engine)
        self._busy = False

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[DirectConnection]:
        connection = None if self._busy else self._kept.here()
        if connection is None:
            with self.engine.connect() as pooled:
                yield DirectConnection(pooled)
            return
        self._busy = True
        try:
            yield DirectConnection(connection)
        finally:
            self._busy = False
            if connection.in_transaction():  # SQLAlchemy's own begun one (SQLite got no BEGIN)
                connection.rollback()

    def close(self) -> None:
        self._kept.close()


class Writer:
    """Write transactions (BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on an error) on one connection
    kept open between them.

    A process's SQLite writes already take turns (storage.engine.write), so one connection is
    all they use; checking one out of the pool and back in for every transaction cost 23 us of
    the 38 us a one-statement transaction took, three to seven times per job. The connection
    belongs to the thread that opened it: a write from another thread (a test's own event loop,
    say) takes one from the pool as before. One that SQLAlchemy found broken is replaced."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._kept = _Kept(engine)

    @contextlib.contextmanager
    def begun(self) -> Iterator[DirectConnection]:
        connection = self._kept.here()
        if connection is None:
            with self.engine.begin() as pooled:
                yield DirectConnection(pooled)
            return
        with connection.begin():
            yield DirectConnection(connection)

    def close(self) -> None:
        """Give the kept connection back (before the engine is disposed)."""
        self._kept.close()
