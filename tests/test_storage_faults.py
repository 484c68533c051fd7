"""Storage under faults: SQLite's write lock held by another process, PostgreSQL restarted under
a pool of connections used moments ago, a database migrated by a newer Conjure."""

from __future__ import annotations

import asyncio
import sqlite3

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError

from storage import idle_ping
from storage.engine import create_engine, write
from storage.jobs import JobStore
from storage.migrate import DatabaseAhead, migrate
from storage.schema_head import migrate_unless_at_head
from tests.test_storage import make_job, user_limit


async def test_a_write_locked_out_by_another_process_raises_sqlalchemys_error(
    sqlite_url: str,
) -> None:
    """The callers catch SQLAlchemy's errors ("the database is unavailable, try again"): a
    BEGIN IMMEDIATE that waited out the busy timeout must be one, not sqlite3's own; and the
    next write, once the lock is free, goes through."""
    engine = create_engine(sqlite_url, connect_args={"timeout": 0.2})
    store = JobStore(engine)
    path = sqlite_url.removeprefix("sqlite+aiosqlite:///")
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process (a worker, `conjure quota`) writes
        with pytest.raises(OperationalError, match="locked"):
            await store.reserve_and_insert(make_job("j1"), user_limit(5))
        other.execute("ROLLBACK")
        await store.reserve_and_insert(make_job("j1"), user_limit(5))
        assert await store.get("j1") is not None
    finally:
        other.close()
        await engine.dispose()


async def _backend_pid(engine) -> int:
    async with write(engine) as conn:
        return int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def test_after_a_server_restart_only_one_operation_fails(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every pooled connection dies with the server (here: all terminated); they were used
    moments ago, so none is pinged. The first operation finds its connection dropped, and, as
    SQLAlchemy's own execution does, every older connection of the pool is replaced with it:
    the next operation is served (idle_ping's promise), not failed on the next dead one."""
    monkeypatch.setattr(idle_ping, "IDLE_BEFORE_PING", 3600)
    engine = create_engine(postgres_url, pool_size=3, max_overflow=0)
    store = JobStore(engine)
    try:
        await store.reserve_and_insert(make_job("j1"), user_limit(5))
        entered = asyncio.Event()
        pids: list[int] = []

        async def hold() -> None:  # three connections open at once: the pool holds three
            async with write(engine) as conn:
                pids.append(int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar()))
                if len(pids) == 3:
                    entered.set()
                await entered.wait()

        await asyncio.gather(hold(), hold(), hold())
        admin = await asyncpg.connect(postgres_url.replace("+asyncpg", ""))
        try:
            await admin.execute("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) pid", pids)
        finally:
            await admin.close()
        with pytest.raises(DBAPIError) as dropped:
            await store.update_fields("j1", progress=50)
        assert dropped.value.connection_invalidated
        await store.update_fields("j1", progress=60)  # on a new connection
        job = await store.get("j1")
        assert job is not None and job.progress == 60
        assert await _backend_pid(engine) not in pids
    finally:
        await engine.dispose()


async def test_a_database_migrated_by_a_newer_conjure_is_refused_plainly(
    empty_database_url: str,
) -> None:
    """A rollback of Conjure onto a database a newer one migrated: neither `serve` nor
    `conjure migrate` touches it, and the refusal says why, not "Can't locate revision"."""
    engine = create_engine(empty_database_url)
    try:
        await migrate_unless_at_head(engine)
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
        for start in (migrate_unless_at_head, migrate):
            with pytest.raises(DatabaseAhead, match=r"0099.*newer Conjure"):
                await start(engine)
        async with engine.connect() as conn:
            version = await conn.execute(text("SELECT version_num FROM alembic_version"))
            assert version.scalar_one() == "0099"
    finally:
        await engine.dispose()


@pytest.mark.parametrize("query", ["sslmode=disable", "sslmode=prefer&connect_timeout=5"])
async def test_a_libpq_url_as_hosts_hand_it_out_connects(postgres_url: str, query: str) -> None:
    """Managed PostgreSQL hands out `postgres://...?sslmode=require` (libpq's words); asyncpg
    takes `ssl` and `timeout` instead and refused the call (TypeError: unexpected keyword)."""
    url = postgres_url.replace("postgresql+asyncpg://", "postgres://") + "?" + query
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await engine.dispose()
