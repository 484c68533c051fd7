"""SQLite for the async engine, run on the event loop instead of a thread per connection.

aiosqlite runs every call (cursor, execute, fetch, close, commit) on a worker thread and wakes
the event loop with each answer. Measured here, that is about 0.6 ms of CPU for a one-row read
that sqlite3 answers in 3 us, and it was a third of the CPU of every webhook. A SQLite statement
in this product touches a handful of indexed rows from the page cache, and nothing in this
process waits for SQLite's write lock (`storage.engine.write` lets one writer at a time ask for
it; WAL readers never wait), so the calls run inline, behind the async interface that
SQLAlchemy's aiosqlite dialect drives (its public `async_creator` hook).

The price: while another process holds the write lock (a second instance on the same file, or
`conjure quota set` for a few milliseconds), a write here waits for it (busy_timeout) with the
event loop held. SQLite is for one instance; several instances belong on PostgreSQL (README).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any

PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA synchronous=NORMAL",
)


def open_sqlite(path: str, *, timeout: float) -> sqlite3.Connection:
    """`path` in autocommit mode (the engine sends BEGIN IMMEDIATE itself), with WAL and a busy
    timeout of `timeout` seconds: every SQLite connection Conjure opens (this module's and
    storage.sqlite_direct's)."""
    connection = sqlite3.connect(
        path, timeout=timeout, isolation_level=None, check_same_thread=False
    )
    try:
        connection.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        for pragma in PRAGMAS:
            connection.execute(pragma)
    except BaseException:
        connection.close()
        raise
    return connection


def connector(path: str, *, timeout: float) -> Callable[[], Any]:
    """An `async_creator` for `create_async_engine` (see open_sqlite)."""

    async def connect() -> InlineConnection:
        return InlineConnection(open_sqlite(path, timeout=timeout))

    return connect


class InlineConnection:
    """What SQLAlchemy's aiosqlite adapter uses of `aiosqlite.Connection`, without the thread."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._conn = connection
        self._connection: sqlite3.Connection | None = connection  # None once closed
        self._tx = _RunNow()  # the adapter's isolation_level setter queues work here

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    def cursor(self) -> _CursorOpener:
        return _CursorOpener(self._conn)

    async def commit(self) -> None:
        self._conn.commit()

    async def rollback(self) -> None:
        self._conn.rollback()

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._conn.create_function(*args, **kwargs)

    async def close(self) -> None:
        self.stop()

    def stop(self) -> None:
        """Close at once (the adapter's terminate); safe to call twice."""
        if self._connection is not None:
            self._connection = None
            self._conn.close()


class InlineCursor:
    """An `aiosqlite.Cursor` look-alike whose coroutines finish without suspending."""

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value

    async def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> InlineCursor:
        self._cursor.execute(sql, () if parameters is None else parameters)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Sequence[Any]]) -> InlineCursor:
        self._cursor.executemany(sql, parameters)
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(self._cursor.arraysize if size is None else size)

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()


class _CursorOpener:
    """`connection.cursor()` is awaited through `__aenter__` by the adapter, as aiosqlite's is."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    async def __aenter__(self) -> InlineCursor:
        return InlineCursor(self._connection.cursor())


class _RunNow:
    """Stands in for aiosqlite's queue to its thread: runs the queued call at once."""

    def put_nowait(self, item: tuple[asyncio.Future[Any] | None, Callable[[], Any]]) -> None:
        future, function = item
        try:
            result = function()
        except Exception as exc:
            if future is not None:
                future.set_exception(exc)
        else:
            if future is not None:
                future.set_result(result)
