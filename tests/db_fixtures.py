"""Database fixtures: a fresh SQLite file, and a fresh PostgreSQL database per test.

PostgreSQL tests run when CONJURE_TEST_POSTGRES_URL is set (CI sets it) and are skipped otherwise.
Each test gets its own database, created from the admin URL and dropped afterwards, so parallel
runs on one server never see each other's rows.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

POSTGRES_ENV = "CONJURE_TEST_POSTGRES_URL"


def postgres_admin_url() -> str | None:
    return os.environ.get(POSTGRES_ENV) or None


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'conjure.db'}"


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    admin = postgres_admin_url()
    if admin is None:
        pytest.skip(f"{POSTGRES_ENV} is not set")
    import asyncpg  # here, not at the top: pytest-xdist's controller loads this plugin too
    from sqlalchemy.engine import make_url

    url = make_url(admin.replace("postgresql+asyncpg://", "postgresql://"))
    name = f"conjure_test_{secrets.token_hex(6)}"
    dsn = url.render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield url.set(drivername="postgresql+asyncpg", database=name).render_as_string(
            hide_password=False
        )
    finally:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test that takes this runs once on SQLite and once on PostgreSQL."""
    return request.getfixturevalue(f"{request.param}_url")
