"""Several instances started at once on one PostgreSQL database each migrate it at start.

Without a lock the second one created the same tables again and died
(`duplicate key value violates unique constraint "pg_type_typname_nsp_index"`), or, on an
upgrade, found the revision it meant to move already moved. Separate processes, as in production:
Alembic's `op` and `context` are per-process globals, so one process cannot show it.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from sqlalchemy import text

from storage.engine import create_engine

ROOT = Path(__file__).resolve().parent.parent
INSTANCES = 3


async def _migrate_in_a_process(database_url: str) -> tuple[int, str]:
    env = {**os.environ, "CONJURE_DATABASE_URL": database_url, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        "migrate",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    return proc.returncode or 0, out.decode(errors="replace")[-2000:]


async def test_instances_migrating_one_fresh_database_at_once_all_start(
    empty_postgres_url: str,
) -> None:
    results = await asyncio.gather(
        *(_migrate_in_a_process(empty_postgres_url) for _ in range(INSTANCES))
    )
    assert [code for code, _ in results] == [0] * INSTANCES, [out for _, out in results]
    engine = create_engine(empty_postgres_url)
    try:
        async with engine.connect() as conn:
            versions = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
    finally:
        await engine.dispose()
    assert len(versions) == 1
