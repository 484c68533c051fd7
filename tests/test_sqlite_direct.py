"""storage.sqlite_direct: SQLite's writes and reads without the async layer, same transactions."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import event, text

from storage.engine import create_engine, reader, statement_engines, write


@pytest.fixture
async def engine(tmp_path: Path):
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'direct.db'}")
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)"))
        await conn.execute(text("INSERT INTO t VALUES (1, 0)"))
    yield engine
    await engine.dispose()


async def value(engine) -> int:
    async with reader(engine).connect() as conn:
        return (await conn.execute(text("SELECT v FROM t WHERE id = 1"))).scalar_one()


async def test_a_write_is_one_immediate_transaction_seen_by_the_async_engine(
    engine, tmp_path: Path
) -> None:
    sent: list[str] = []
    for sync_engine in statement_engines(engine):
        event.listen(sync_engine, "before_cursor_execute", lambda _c, _u, s, *_: sent.append(s))
    async with write(engine) as conn:
        await conn.execute(text("SELECT v FROM t WHERE id = 1"))
        # IMMEDIATE: the write lock is this transaction's from its BEGIN, before any write
        other = sqlite3.connect(tmp_path / "direct.db", timeout=0, isolation_level=None)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
        other.close()
        await conn.execute(text("UPDATE t SET v = v + 1 WHERE id = 1"))
        await conn.execute(text("UPDATE t SET v = v + 1 WHERE id = 1"))
    assert sent == ["SELECT v FROM t WHERE id = 1", *["UPDATE t SET v = v + 1 WHERE id = 1"] * 2]
    assert await value(engine) == 2
    async with engine.connect() as conn:  # another connection to the file agrees
        assert (await conn.execute(text("SELECT v FROM t"))).scalar_one() == 2


async def test_an_error_or_a_cancel_inside_a_write_rolls_it_all_back(engine) -> None:
    with pytest.raises(RuntimeError):
        async with write(engine) as conn:
            await conn.execute(text("UPDATE t SET v = 5 WHERE id = 1"))
            raise RuntimeError("after the first statement")
    assert await value(engine) == 0

    entered = asyncio.Event()

    async def held() -> None:
        async with write(engine) as conn:
            await conn.execute(text("UPDATE t SET v = 7 WHERE id = 1"))
            entered.set()
            await asyncio.sleep(10)

    task = asyncio.create_task(held())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await value(engine) == 0
    async with write(engine) as conn:  # and the write lock was given back
        await conn.execute(text("UPDATE t SET v = 1 WHERE id = 1"))
    assert await value(engine) == 1


async def test_writers_of_one_process_take_turns(engine) -> None:
    async def add(times: int) -> None:
        for _ in range(times):
            async with write(engine) as conn:
                v = (await conn.execute(text("SELECT v FROM t WHERE id = 1"))).scalar_one()
                await asyncio.sleep(0)  # another writer would interleave here without the lock
                await conn.execute(text("UPDATE t SET v = :v WHERE id = 1"), {"v": v + 1})

    await asyncio.gather(*(add(20) for _ in range(5)))
    assert await value(engine) == 100


def _driver(conn) -> sqlite3.Connection:
    return conn.sync_connection.connection.driver_connection


async def test_writes_keep_one_connection_replace_a_broken_one_and_give_it_back(
    engine, tmp_path: Path
) -> None:
    checkouts: list[object] = []
    direct = statement_engines(engine)[-1]
    event.listen(direct, "checkout", lambda *_: checkouts.append(_))
    seen: list[sqlite3.Connection] = []
    for v in (1, 2, 3):
        async with write(engine) as conn:
            seen.append(_driver(conn))
            await conn.execute(text("UPDATE t SET v = :v WHERE id = 1"), {"v": v - 1})
    assert seen[0] is seen[1] is seen[2] and len(checkouts) <= 1  # none per transaction
    with pytest.raises(RuntimeError):  # a failed transaction leaves it usable
        async with write(engine) as conn:
            await conn.execute(text("UPDATE t SET v = 9 WHERE id = 1"))
            raise RuntimeError("rolled back")
    with pytest.raises(sqlite3.OperationalError):  # a statement finds the connection broken
        async with write(engine) as conn:
            assert _driver(conn) is seen[0]
            conn.sync_connection.invalidate()  # as SQLAlchemy does on a disconnect error
            raise sqlite3.OperationalError("disk I/O error")
    async with write(engine) as conn:
        replaced = _driver(conn)
        await conn.execute(text("UPDATE t SET v = v + 1 WHERE id = 1"))
    assert replaced is not seen[0] and await value(engine) == 3

    def elsewhere() -> sqlite3.Connection:  # another thread's loop: a pooled connection
        async def one() -> sqlite3.Connection:
            async with write(engine) as conn:
                await conn.execute(text("UPDATE t SET v = v + 1 WHERE id = 1"))
                return _driver(conn)

        return asyncio.run(one())

    assert await asyncio.to_thread(elsewhere) is not replaced
    assert await value(engine) == 4
    await engine.dispose()  # the kept connection is closed with the engine
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        replaced.execute("SELECT 1")


async def test_reads_keep_one_connection_unless_one_still_reads_and_give_it_back(
    engine,
) -> None:
    checkouts: list[object] = []
    direct = statement_engines(engine)[-1]
    event.listen(direct, "checkout", lambda *_: checkouts.append(_))
    seen: list[sqlite3.Connection] = []
    for _ in range(3):
        async with reader(engine).connect() as conn:
            seen.append(_driver(conn))
            await conn.execute(text("SELECT v FROM t WHERE id = 1"))
    assert seen[0] is seen[1] is seen[2] and len(checkouts) <= 1  # none per read
    assert not seen[0].in_transaction  # SQLite got no BEGIN, so nothing holds the WAL back
    async with reader(engine).connect() as outer:  # two blocks at once: the second checks out
        async with reader(engine).connect() as inner:
            assert inner.sync_connection is not outer.sync_connection
            assert (await inner.execute(text("SELECT v FROM t WHERE id = 1"))).scalar() == 0
        assert (await outer.execute(text("SELECT v FROM t WHERE id = 1"))).scalar() == 0
    async with write(engine) as conn:  # a write between reads is seen by the next one
        await conn.execute(text("UPDATE t SET v = 5 WHERE id = 1"))
    assert await value(engine) == 5
    with pytest.raises(RuntimeError):
        async with reader(engine).connect() as conn:
            raise RuntimeError("a read that fails leaves the connection usable")
    async with reader(engine).connect() as conn:
        assert _driver(conn) is seen[0]
        conn.sync_connection.invalidate()  # as SQLAlchemy does on a disconnect error
    async with reader(engine).connect() as conn:
        replaced = _driver(conn)
    assert replaced is not seen[0] and await value(engine) == 5

    def elsewhere() -> sqlite3.Connection:  # another thread's loop: a pooled connection
        async def one() -> sqlite3.Connection:
            async with reader(engine).connect() as conn:
                return _driver(conn)

        return asyncio.run(one())

    assert await asyncio.to_thread(elsewhere) is not replaced
    await engine.dispose()  # the kept connection is closed with the engine
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        replaced.execute("SELECT 1")
