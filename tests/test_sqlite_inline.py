"""SQLite on the event loop: the engine behaves as a DBAPI engine should (errors, transactions,
a second process's write lock), with no thread in between."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError

from storage.engine import create_engine, reader, write


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "inline.db"


async def test_writes_commit_roll_back_and_raise_sqlalchemy_errors(db_path: Path) -> None:
    engine = create_engine(f"sqlite:///{db_path}")
    try:
        async with write(engine) as conn:
            await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
            await conn.execute(text("INSERT INTO t VALUES (1, 'a')"))
        with pytest.raises(IntegrityError):
            async with write(engine) as conn:
                await conn.execute(text("INSERT INTO t VALUES (2, 'b')"))
                await conn.execute(text("INSERT INTO t VALUES (1, 'again')"))
        with pytest.raises(OperationalError):
            async with reader(engine).connect() as conn:
                await conn.execute(text("SELECT nope FROM t"))
        async with reader(engine).connect() as conn:
            rows = (await conn.execute(text("SELECT id, v FROM t ORDER BY id"))).all()
        assert [tuple(row) for row in rows] == [(1, "a")]  # the failed transaction left nothing
        workers = [t for t in threading.enumerate() if "_connection_worker" in t.name]
        assert workers == []  # no aiosqlite thread per connection
    finally:
        await engine.dispose()


async def test_a_write_waits_for_another_process_holding_the_lock(db_path: Path) -> None:
    engine = create_engine(f"sqlite:///{db_path}", connect_args={"timeout": 5})
    try:
        async with write(engine) as conn:
            await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
        other = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO t VALUES (1, 'other')")
        releaser = threading.Timer(0.3, other.execute, args=("COMMIT",))
        releaser.start()
        async with write(engine) as conn:  # waits (busy_timeout) instead of failing
            await conn.execute(text("INSERT INTO t VALUES (2, 'ours')"))
        releaser.join()
        other.close()
        async with reader(engine).connect() as conn:
            rows = (await conn.execute(text("SELECT v FROM t ORDER BY id"))).scalars().all()
        assert rows == ["other", "ours"]
    finally:
        await engine.dispose()


def test_a_memory_database_is_refused() -> None:
    with pytest.raises(ValueError, match="in-memory"):
        create_engine("sqlite:///:memory:")
