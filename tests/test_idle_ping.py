"""storage.idle_ping: a pooled PostgreSQL connection is checked before use only when it sat idle;
one that died meanwhile is replaced before anyone's statement meets it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from storage import idle_ping
from storage.engine import create_engine, write


@pytest.fixture
async def engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(postgres_url, pool_size=1, max_overflow=0)
    yield engine
    await engine.dispose()


@pytest.fixture
def pings(monkeypatch: pytest.MonkeyPatch, engine: AsyncEngine) -> list[Any]:
    """Every ping the dialect sends, noted."""
    sent: list[Any] = []
    ping = engine.dialect.do_ping

    def noted(dbapi_connection: Any) -> bool:
        sent.append(dbapi_connection)
        return ping(dbapi_connection)

    monkeypatch.setattr(engine.dialect, "do_ping", noted)
    return sent


async def backend(engine: AsyncEngine) -> int:
    async with write(engine) as conn:
        return int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def test_a_busy_connection_is_used_without_a_ping(
    engine: AsyncEngine, pings: list[Any]
) -> None:
    first = await backend(engine)
    assert [await backend(engine) for _ in range(5)] == [first] * 5
    assert pings == []


async def test_an_idle_connection_that_died_is_replaced_before_use(
    engine: AsyncEngine, pings: list[Any], postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await backend(engine)
    admin = await asyncpg.connect(postgres_url.replace("+asyncpg", ""))
    try:
        await admin.execute("SELECT pg_terminate_backend($1)", first)
    finally:
        await admin.close()
    monkeypatch.setattr(idle_ping, "IDLE_BEFORE_PING", 0.05)
    await asyncio.sleep(0.1)  # idle for longer than that: checked at checkout

    second = await backend(engine)  # no error: the dead one was replaced first
    assert second != first
    assert len(pings) == 1
