"""Database fixtures: a fresh SQLite file, and an empty PostgreSQL database, for each test.

PostgreSQL tests run when CONJURE_TEST_POSTGRES_URL is set (CI sets it) and are skipped otherwise.
Each test process has databases of its own on the server, so parallel runs on one server never
see each other's rows.

`sqlite_url`, `postgres_url` and `database_url` are already migrated to head: SQLite's is a copy
of a file migrated once per test process, PostgreSQL's the process's own database (copied once
from a migrated template) emptied before each test, because running Alembic for every test was a
tenth of the suite's CPU and creating a database a quarter of a second of the server's. The
product still calls `migrate` at start-up, which finds the schema at head. Tests about migrations
themselves take the `empty_*` fixtures.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

POSTGRES_ENV = "CONJURE_TEST_POSTGRES_URL"


def postgres_admin_url() -> str | None:
    return os.environ.get(POSTGRES_ENV) or None


async def _migrate_to_head(url: str) -> None:
    from storage.engine import create_engine
    from storage.migrate import migrate

    engine = create_engine(url)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()


def _run(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run set-up work on a loop of its own, leaving the test's event loop alone."""
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(coroutine)
    finally:
        loop.close()


def _sqlite(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "conjure.db"
    _run(_migrate_to_head(_sqlite(path)))
    return path


@pytest.fixture
def empty_sqlite_url(tmp_path: Path) -> str:
    return _sqlite(tmp_path / "conjure.db")


@pytest.fixture
def sqlite_url(tmp_path: Path, _sqlite_template: Path) -> str:
    path = tmp_path / "conjure.db"
    shutil.copyfile(_sqlite_template, path)
    return _sqlite(path)


@pytest.fixture
async def sqlite_store(sqlite_url: str) -> AsyncIterator[Any]:
    """A JobStore on a fresh, migrated SQLite database."""
    from storage.engine import create_engine
    from storage.jobs import JobStore

    engine = create_engine(sqlite_url)
    yield JobStore(engine)
    await engine.dispose()


def _admin_dsn() -> str:
    from sqlalchemy.engine import make_url

    admin = postgres_admin_url()
    if admin is None:
        pytest.skip(f"{POSTGRES_ENV} is not set")
    url = make_url(admin.replace("postgresql+asyncpg://", "postgresql://"))
    return url.render_as_string(hide_password=False)


def _database_url(dsn: str, name: str) -> str:
    from sqlalchemy.engine import make_url

    url = make_url(dsn).set(drivername="postgresql+asyncpg", database=name)
    return url.render_as_string(hide_password=False)


async def _admin(dsn: str, statement: str) -> None:
    import asyncpg  # here, not at the top: pytest-xdist's controller loads this plugin too

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def _postgres_template() -> Iterator[str]:
    """A database migrated to head that each test's database is copied from."""
    dsn = _admin_dsn()
    name = f"conjure_template_{secrets.token_hex(6)}"
    _run(_admin(dsn, f'CREATE DATABASE "{name}"'))
    try:
        _run(_migrate_to_head(_database_url(dsn, name)))
        yield name
    finally:
        _run(_admin(dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _scratch_database(template: str | None) -> AsyncIterator[str]:
    dsn = _admin_dsn()
    name = f"conjure_test_{secrets.token_hex(6)}"
    copy = f' TEMPLATE "{template}"' if template else ""
    await _admin(dsn, f'CREATE DATABASE "{name}"{copy}')
    try:
        yield _database_url(dsn, name)
    finally:
        await _admin(dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def empty_postgres_url() -> AsyncIterator[str]:
    async for url in _scratch_database(None):
        yield url


@pytest.fixture(scope="session")
def _postgres_reused(_postgres_template: str) -> Iterator[str]:
    """This test process's own database, copied once from the template and emptied before
    each test that takes it: a CREATE DATABASE per test cost ~0.25 s of the server's time
    (it writes the whole template to the WAL), emptying it ~20 ms. A process runs one test
    at a time, so one database each is enough."""
    dsn = _admin_dsn()
    name = f"conjure_test_{secrets.token_hex(6)}"
    _run(_admin(dsn, f'CREATE DATABASE "{name}" TEMPLATE "{_postgres_template}"'))
    try:
        yield name
    finally:
        _run(_admin(dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _emptied(dsn: str, name: str) -> None:
    """Every row gone but the schema's version, and nobody from the last test still connected
    (what DROP DATABASE ... WITH (FORCE) did), so a leftover lock cannot hold this one up."""
    import asyncpg

    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
    finally:
        await admin.close()
    conn = await asyncpg.connect(_database_url(dsn, name).replace("+asyncpg", ""))
    try:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename <> 'alembic_version'"
        )
        listed = ", ".join(f'"{row["tablename"]}"' for row in tables)
        await conn.execute(f"TRUNCATE {listed} RESTART IDENTITY CASCADE")
    finally:
        await conn.close()


@pytest.fixture
async def postgres_url(_postgres_reused: str) -> str:
    dsn = _admin_dsn()
    await _emptied(dsn, _postgres_reused)
    return _database_url(dsn, _postgres_reused)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test that takes this runs once on SQLite and once on PostgreSQL."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database_url(request: pytest.FixtureRequest) -> str:
    """A database with no tables yet, on SQLite and on PostgreSQL: for tests of migrations."""
    return request.getfixturevalue(f"empty_{request.param}_url")
