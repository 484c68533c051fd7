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
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from storage import sqlite_inline
from storage.compiled_connection import CompiledConnection, CompiledReader
from storage.idle_ping import ping_when_idle
from storage.sqlite_direct import DirectConnection, DirectReader, Writer, direct_engine
from storage.urls import normalize_database_url

READ_ONLY = "conjure_read_only"


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
    return CompiledReader(
        engine.execution_options(isolation_level="AUTOCOMMIT", **{READ_ONLY: True})
    )


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
    engine = create_async_engine(
        _libpq_to_asyncpg(url, connect_args), connect_args=connect_args, **kwargs
    )
    if not kwargs.get("pool_pre_ping"):
        ping_when_idle(engine)  # storage.idle_ping: pre-ping's check, for idle connections only
    return engine


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
