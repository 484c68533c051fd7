"""storage.engine.write_one: the job path's writes of one statement, each its own transaction.

On PostgreSQL such a write goes without BEGIN and COMMIT (autocommit): two round trips fewer for
each of a job's attach, checkpoint, delivery claim and mark. What it writes is committed when it
returns, and a second statement in the same block is refused: it would not share the first's
transaction.
"""

from __future__ import annotations

import pytest
from sqlalchemy import text

from storage.engine import create_engine, write, write_one
from tests.tcp_relay import relayed_postgres


async def test_a_one_statement_write_on_postgres_sends_no_begin_or_commit(
    postgres_url: str,
) -> None:
    """What reaches the server, read on the wire: a transaction's BEGIN and COMMIT for write(),
    neither for write_one()."""
    async with relayed_postgres(postgres_url) as (relay, url):
        engine = create_engine(url)
        try:
            async with write(engine) as conn:
                await conn.execute(text("SELECT 1"))
            assert b"BEGIN" in relay.sent and b"COMMIT" in relay.sent
            relay.sent.clear()
            async with write_one(engine) as conn:
                assert (await conn.execute(text("SELECT 2"))).scalar() == 2
            assert b"SELECT 2" in relay.sent
            assert b"BEGIN" not in relay.sent and b"COMMIT" not in relay.sent
        finally:
            await engine.dispose()


async def test_a_one_statement_write_is_committed_as_it_returns(database_url: str) -> None:
    engine = create_engine(database_url)
    other = create_engine(database_url)
    try:
        async with write(engine) as conn:
            await conn.execute(text("CREATE TABLE one_write (id INTEGER PRIMARY KEY, n INTEGER)"))
            await conn.execute(text("INSERT INTO one_write VALUES (1, 0)"))
        async with write_one(engine) as conn:
            result = await conn.execute(text("UPDATE one_write SET n = n + 1 WHERE id = 1"))
            assert result.rowcount == 1
        async with other.connect() as conn:
            assert (await conn.execute(text("SELECT n FROM one_write"))).scalar() == 1
    finally:
        await other.dispose()
        await engine.dispose()


async def test_a_second_statement_in_a_one_statement_write_is_refused(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        with pytest.raises(RuntimeError, match="one statement"):
            async with write_one(engine) as conn:
                await conn.execute(text("SELECT 1"))
                await conn.execute(text("SELECT 2"))
    finally:
        await engine.dispose()
