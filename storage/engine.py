"""Async engines for SQLite and PostgreSQL, set up so that conditional updates are atomic.

SQLite (run on the event loop, see storage.sqlite_inline): WAL (readers never block the writer),
a busy timeout, and `BEGIN IMMEDIATE` for every transaction that may write, because a deferred
`BEGIN` that later upgrades to a write fails with SQLITE_BUSY instead of waiting. Reads go through
`reader(engine)`, which never takes the write lock (no BEGIN: each statement is its own read
transaction), and `write(engine)` queues this process's writers on an asyncio lock, so only one of
them at a time asks SQLite for the write lock (other processes wait through busy_timeout).
PostgreSQL: asyncpg; its default READ COMMITTED
re-checks an UPDATE's WHERE against the newest row version, which is all the quota statements
need. A pooled connection is pinged before use only when it sat idle (storage.idle_ping).

PostgreSQL waits end, as SQLite's busy timeout does: each connection asks the server (in its
startup packet, asyncpg's `server_settings`) to give up a lock wait after LOCK_TIMEOUT, to cancel
a statement after STATEMENT_TIMEOUT, and to end a session left idle inside a transaction for
IDLE_IN_TRANSACTION_TIMEOUT. Without them, an instance hung inside a transaction (SIGSTOP, a
frozen host) held its row locks for ever, and every command and webhook that needed those rows
waited for ever behind it. A lock wait or a statement that runs out fails as SQLAlchemy's
DBAPIError (asyncpg's LockNotAvailableError, QueryCanceledError) and rolls its transaction back,
which callers already answer as a database they cannot reach ("try again"). Migrations lift the
first two for their own transaction (`unbounded`, storage.migrate). The leader's lock session
(bot.leadership) has an engine of its own, and none of these.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.util import await_only

from storage import sqlite_inline
from storage.compiled_connection import CompiledConnection, CompiledReader
from storage.idle_ping import ping_when_idle
from storage.sqlite_direct import DirectConnection, DirectReader, Writer, direct_engine
from storage.urls import normalize_database_url

log = logging.getLogger(__name__)

READ_ONLY = "conjure_read_only"

# PostgreSQL's bounds on waiting (seconds; 0 turns one off), read by each create_engine.
# A transaction of Conjure's sends its statements back to back (no request to a platform or to
# Replicate happens inside one): one left idle this long is a frozen process's (SIGSTOP, a host
# that froze), whose row locks would otherwise be held until someone kills it. The server ends
# that session (its transaction rolled back whole), and whoever waited for its rows goes on.
IDLE_IN_TRANSACTION_TIMEOUT = 10.0
# Above the idle bound, so that a wait behind a frozen holder ends in that holder's session
# being ended (the waiter goes on), not in the waiter giving up. A burst on PostgreSQL queues on
# one workspace's counter rows for seconds (measured: 500 commands at once, two workers, waits
# past 2 s, each holder's transaction spanning event-loop turns): a shorter bound refused and
# failed healthy commands and webhooks there. A wait this long is a live holder stuck, which
# the person is told as a database that cannot be reached ("try again").
LOCK_TIMEOUT = 15.0
# No statement of Conjure's comes near this (one row, or an index range): one that does is a
# server in trouble, and waiting on it for ever only piles up the tasks behind it.
STATEMENT_TIMEOUT = 30.0


def reader(engine: AsyncEngine) -> AsyncEngine | DirectReader | CompiledReader:
    """The engine for read-only work (`.connect()`), which SQLite runs without the write lock.

    Only for blocks that never write. No BEGIN is sent: each statement reads its own consistent
    snapshot, and every read in storage/ is one statement. SQLite's reads go through its direct
    engine (storage.sqlite_direct); PostgreSQL's in autocommit, which spares each read the BEGIN
    and the ROLLBACK around it, two round trips (0.43 -> 0.31-0.37 ms of client CPU for one
    read, measured here). Under READ COMMITTED, a statement in a transaction sees what one alone
    would: the latest committed rows. Both run the statements built once compiled once
    (storage.compiled_once; PostgreSQL's through storage.compiled_connection).
    """
    direct_reader = _READERS.get(engine.sync_engine.pool)
    if direct_reader is not None:
        return direct_reader
    if engine.dialect.name == "sqlite":  # an engine disposed and used again: a new pool
        return engine.execution_options(**{READ_ONLY: True})
    # Made once an engine: an engine's options copy costs 25 us, a tenth of a read.
    compiled_reader = _PG_READERS.get(engine)
    if compiled_reader is None:
        compiled_reader = CompiledReader(
            engine.execution_options(isolation_level="AUTOCOMMIT", **{READ_ONLY: True})
        )
        _PG_READERS[engine] = compiled_reader
    return compiled_reader


_PG_READERS: weakref.WeakKeyDictionary[AsyncEngine, CompiledReader] = weakref.WeakKeyDictionary()


# A SQLite engine's direct (synchronous) twin, its reader and its writer, by the async engine's
# pool (shared by its execution_options copies).
_DIRECT: weakref.WeakKeyDictionary[Any, Engine] = weakref.WeakKeyDictionary()
_READERS: weakref.WeakKeyDictionary[Any, DirectReader] = weakref.WeakKeyDictionary()
_WRITERS: weakref.WeakKeyDictionary[Any, Writer] = weakref.WeakKeyDictionary()

_Locks = weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock]
_WRITE_LOCKS: weakref.WeakKeyDictionary[Any, _Locks] = weakref.WeakKeyDictionary()


@contextlib.asynccontextmanager
async def write(
    engine: AsyncEngine,
) -> AsyncIterator[AsyncConnection | DirectConnection | CompiledConnection]:
    """`engine.begin()`, one writer of this process at a time on SQLite (any number elsewhere);
    SQLite's through its direct engine (storage.sqlite_direct), PostgreSQL's statements built
    once compiled once (storage.compiled_connection)."""
    if engine.dialect.name != "sqlite":
        async with engine.begin() as conn:
            yield CompiledConnection(conn)
        return
    pool = engine.sync_engine.pool
    locks = _WRITE_LOCKS.get(pool)
    if locks is None:
        locks = _WRITE_LOCKS.setdefault(pool, weakref.WeakKeyDictionary())
    loop = asyncio.get_running_loop()
    lock = locks.get(loop)
    if lock is None:
        lock = locks.setdefault(loop, asyncio.Lock())
    writer = _WRITERS.get(pool)
    async with lock:
        if writer is None:
            async with engine.begin() as conn:
                yield conn
        else:
            with writer.begun() as direct_conn:
                yield direct_conn


@contextlib.asynccontextmanager
async def write_one(engine: AsyncEngine) -> AsyncIterator[OneStatement]:
    """A write of one statement, which is a transaction by itself: on PostgreSQL it runs in
    autocommit, without the BEGIN and the COMMIT around it (two round trips; measured here,
    0.57-0.66 -> 0.33-0.35 ms of client CPU and 1.05 -> 0.63 ms of wall time for a
    one-row UPDATE). Atomic as before: one statement is atomic alone, and under READ COMMITTED
    it sees and locks what it would inside a transaction. SQLite's is `write`'s (one writer
    at a time; its transactions cost no round trips). A second statement is refused: it
    would not be in the same transaction as the first."""
    if engine.dialect.name == "sqlite":
        async with write(engine) as conn:
            yield OneStatement(conn)
        return
    async with _autocommit(engine).connect() as connection:
        yield OneStatement(CompiledConnection(connection))


class OneStatement:
    """A connection for `write_one`: its `execute` runs once."""

    __slots__ = ("_connection", "_used")

    def __init__(self, connection: AsyncConnection | DirectConnection | CompiledConnection):
        self._connection = connection
        self._used = False

    async def execute(self, statement: Any, parameters: Any = None) -> Any:
        if self._used:
            raise RuntimeError("write_one runs one statement; use write() for a transaction")
        self._used = True
        return await self._connection.execute(statement, parameters)


_AUTOCOMMIT: weakref.WeakKeyDictionary[AsyncEngine, AsyncEngine] = weakref.WeakKeyDictionary()


def _autocommit(engine: AsyncEngine) -> AsyncEngine:
    """`engine` in autocommit (its pool shared), made once (a copy costs 25 us)."""
    autocommit = _AUTOCOMMIT.get(engine)
    if autocommit is None:
        autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        _AUTOCOMMIT[engine] = autocommit
    return autocommit


def statement_engines(engine: AsyncEngine) -> list[Engine]:
    """The synchronous engines that run `engine`'s statements (to watch them: tests, tools)."""
    direct = _DIRECT.get(engine.sync_engine.pool)
    return [engine.sync_engine] if direct is None else [engine.sync_engine, direct]


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An AsyncEngine for `url` with the per-backend settings described above."""
    url = normalize_database_url(url)
    if url.startswith("sqlite"):
        return _sqlite_engine(url, **kwargs)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    connect_args = dict(kwargs.pop("connect_args", {}))
    bounds = _bounds()
    # An explicit server_settings entry wins over the bounds.
    connect_args["server_settings"] = {**bounds, **connect_args.get("server_settings", {})}
    engine = create_async_engine(
        _libpq_to_asyncpg(url, connect_args), connect_args=connect_args, **kwargs
    )
    _set_after_connecting_if_refused(engine, bounds)
    if not kwargs.get("pool_pre_ping"):
        ping_when_idle(engine)  # storage.idle_ping: pre-ping's check, for idle connections only
    return engine


def _milliseconds(seconds: float) -> str:
    return str(max(1, round(seconds * 1000)) if seconds > 0 else 0)


def _bounds() -> dict[str, str]:
    """The PostgreSQL settings that bound waiting, in milliseconds, as of now (tests lower the
    constants)."""
    return {
        "lock_timeout": _milliseconds(LOCK_TIMEOUT),
        "statement_timeout": _milliseconds(STATEMENT_TIMEOUT),
        "idle_in_transaction_session_timeout": _milliseconds(IDLE_IN_TRANSACTION_TIMEOUT),
    }


def _set_after_connecting_if_refused(engine: AsyncEngine, bounds: dict[str, str]) -> None:
    """Connect with the bounds in the startup packet; where that is refused, SET them instead.

    A pooler in front of the server (PgBouncer, even in session mode; hosted poolers) ends a
    connection whose startup packet carries a parameter it does not know ("unsupported startup
    parameter: lock_timeout"): it would leave Conjure unable to connect at all. The first such
    refusal makes this engine connect without them and SET them at once, in one round trip, for
    every connection from then on."""
    refused = False

    @event.listens_for(engine.sync_engine, "do_connect")
    def _connect(dialect: Any, _record: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
        nonlocal refused
        if not refused:
            try:
                return dialect.connect(*cargs, **cparams)
            except Exception as error:
                if "unsupported startup parameter" not in str(error):
                    raise
                refused = True
                log.warning(
                    "the database (a pooler?) refused lock_timeout and the other timeouts at "
                    "connect (%s); they are set after connecting instead",
                    error,
                )
        asked = cparams.get("server_settings") or {}
        startup = {name: value for name, value in asked.items() if name not in bounds}
        connection = dialect.connect(*cargs, **{**cparams, "server_settings": startup or None})
        sets = "; ".join(
            f"SET {name} TO {_literal(str(value))}"
            for name, value in asked.items()
            if name in bounds
        )
        try:
            await_only(connection.driver_connection.execute(sets))  # one round trip
        except BaseException:
            connection.close()
            raise
        return connection


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def unbounded(connection: Connection) -> None:
    """Lift the lock and statement timeouts for the rest of `connection`'s transaction, on
    PostgreSQL: a migration's. It waits for the migration lock for as long as another
    instance's migration takes, and its statements (a table rewritten, an index built on a big
    table) may run for minutes; both settings come back with the transaction's end. The idle
    bound stays: a migration sends its statements back to back, and a frozen one's locks (on
    the job table itself) must not be held for ever either."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(
            "SELECT set_config('lock_timeout', '0', true), "
            "set_config('statement_timeout', '0', true)"
        )


def _libpq_to_asyncpg(url: str, connect_args: dict[str, Any]) -> URL:
    """`url` without the libpq parameters hosted PostgreSQL hands out (`?sslmode=require`,
    `connect_timeout=10`), which asyncpg's connect() refuses (TypeError: unexpected keyword);
    their values go to `connect_args` under asyncpg's names (an explicit one wins)."""
    parsed = make_url(url)
    query = dict(parsed.query)
    if "sslmode" in query:
        connect_args.setdefault("ssl", query.pop("sslmode"))
    if "connect_timeout" in query:
        connect_args.setdefault("timeout", float(query.pop("connect_timeout")))  # type: ignore[arg-type]
    return parsed.set(query=query)


def _sqlite_engine(url: str, **kwargs: Any) -> AsyncEngine:
    connect_args = kwargs.pop("connect_args", {})
    path = make_url(url).database
    if path in (None, "", ":memory:"):
        raise ValueError("an in-memory SQLite database cannot be shared; give a file path")
    engine = create_async_engine(
        url,
        async_creator=sqlite_inline.connector(path, timeout=connect_args.get("timeout", 30)),
        **kwargs,
    )

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        if not connection.get_execution_options().get(READ_ONLY, False):
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    direct = direct_engine(
        path, timeout=connect_args.get("timeout", 30), read_only_option=READ_ONLY
    )
    writer = Writer(direct)
    direct_reader = DirectReader(direct.execution_options(**{READ_ONLY: True}))
    _DIRECT[engine.sync_engine.pool] = direct
    _READERS[engine.sync_engine.pool] = direct_reader
    _WRITERS[engine.sync_engine.pool] = writer

    @event.listens_for(engine.sync_engine, "engine_disposed")
    def _on_dispose(_: Any) -> None:
        writer.close()
        direct_reader.close()
        direct.dispose()  # its connections close with the async engine's

    return engine
