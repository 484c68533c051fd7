"""Money columns hold amounts past 2^31 micro-dollars ($2,147.48) on every database.

PostgreSQL's INTEGER is 32-bit: a monthly budget or spend above ~$2,147, or one long by-the-second
run, overflowed it. These go through the real quota and storage code (the conditional UPDATEs,
the settle, the alert outbox, the report), not through raw SQL, so a bind parameter typed too
narrow fails here as well as a column.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel

from bot.config import Settings
from bot.quotas.service import Quotas
from storage.engine import create_engine
from storage.jobs import JobStore, user_subject
from storage.migrate import migrate
from storage.models import Job, JobStatus, Reservation, utcnow
from storage.quotas import QuotaStore
from storage.usage import LimitReached

LIMIT = 6_000_123_456  # $6,000.123456: a monthly budget past $5,000
CEILING = 5_500_000_001  # one job's reserved ceiling, past 2^31
ACTUAL = 5_250_000_007  # what that job was billed: 87.5% of the budget, so an alert is due
BIG = 2**31


@pytest.fixture
async def engine(empty_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(empty_database_url)
    await migrate(engine)
    yield engine
    await engine.dispose()


def _job(job_id: str, period: str) -> Job:
    return Job(
        id=job_id,
        platform="slack",
        workspace="T1",
        channel="C1",
        user_id="U1",
        command="transcribe",
        model="whisper",
        model_ref="openai/whisper",
        prompt="https://example.com/a-very-long-meeting.mp3",
        usage_period=period,
        estimated_micros=CEILING,
    )


async def test_budget_spend_and_job_cost_past_2_31_read_back_exactly(engine: AsyncEngine) -> None:
    assert LIMIT > BIG and CEILING > BIG and ACTUAL > BIG
    quotas = Quotas(Settings(_env_file=None), QuotaStore(engine))  # type: ignore[call-arg]
    store = JobStore(engine)
    subject = user_subject("slack", "T1", "U1")
    now = utcnow()

    limits = await quotas.override("user", subject, {"usd_per_month_micros": LIMIT}, "cli")
    assert limits.usd_per_month_micros == LIMIT

    holds = await quotas.holds("slack", "T1", "U1", now)
    job = _job("bigjob", quotas.windows(now)[0].key)
    await store.reserve_and_insert(job, holds)
    month = quotas.windows(now)[1].key
    held = await store.counter("user", subject, month)
    assert held is not None and held.reserved_micros == CEILING and held.spent_micros == 0

    finished = await store.finish(
        job, JobStatus.SUCCEEDED, actual_micros=ACTUAL, give_back_job=False, predict_time=4.4e6
    )
    assert finished is not None and finished.alerts_due

    stored = await store.get("bigjob")
    assert stored is not None
    assert (stored.estimated_micros, stored.actual_micros) == (CEILING, ACTUAL)
    assert stored.reservation == Reservation.SETTLED
    spent = await store.counter("user", subject, month)
    assert spent is not None and (spent.reserved_micros, spent.spent_micros) == (0, ACTUAL)
    override = await quotas.store.override("user", subject)
    assert override is not None and override.usd_per_month_micros == LIMIT
    (alert,) = await quotas.store.unsent_alerts()
    assert (alert.threshold, alert.spent_micros, alert.limit_micros) == (80, ACTUAL, LIMIT)
    report = await quotas.store.spend_by(
        "user_id", now - timedelta(days=1), now + timedelta(days=1), {"platform": "slack"}
    )
    assert [(row.name, row.spent_micros) for row in report] == [("U1", ACTUAL)]

    # What is left ($750.12) refuses a second job of the same ceiling: the check itself is exact.
    with pytest.raises(LimitReached):
        await store.reserve_and_insert(_job("second", job.usage_period), holds)


async def test_money_columns_are_64_bit_on_postgresql(empty_postgres_url: str) -> None:
    engine = create_engine(empty_postgres_url)
    try:
        await migrate(engine)
        async with engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT table_name, column_name, data_type FROM information_schema.columns "
                    "WHERE column_name LIKE '%micros' OR column_name = 'jobs_per_day'"
                )
            )
            types = {f"{table}.{column}": kind for table, column, kind in rows}
    finally:
        await engine.dispose()
    assert types == {
        "job.estimated_micros": "bigint",
        "job.actual_micros": "bigint",
        "usage_counter.reserved_micros": "bigint",
        "usage_counter.spent_micros": "bigint",
        "quota_override.usd_per_month_micros": "bigint",
        "quota_override.jobs_per_day": "integer",
        "budget_alert.spent_micros": "bigint",
        "budget_alert.limit_micros": "bigint",
        "confirmation.estimate_micros": "bigint",
    }


async def test_0005_keeps_rows_indexes_and_constraints(empty_database_url: str) -> None:
    """Upgraded from 0004 with rows in place: they survive (SQLite rebuilds the tables), and the
    schema is exactly the models', indexes and unique keys included."""
    engine = create_engine(empty_database_url)
    try:
        await migrate(engine, "0004")
        store = JobStore(engine)
        job = _job("old", "day:2026-12-01")
        job.estimated_micros, job.request_key = 72_000, "slack:T1.trigger"
        async with engine.begin() as conn:
            # Only the columns 0004 has: later migrations add more to the model.
            existing = await conn.run_sync(
                lambda sync: {c["name"] for c in inspect(sync).get_columns("job")}
            )
            row = {k: v for k, v in job.model_dump().items() if k in existing}
            await conn.execute(Job.__table__.insert().values(**row))
        await migrate(engine)
        stored = await store.get("old")
        assert stored is not None and stored.estimated_micros == 72_000
        assert await store.has_request("slack:T1.trigger")
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), SQLModel.metadata)
            )
        assert diff == []
    finally:
        await engine.dispose()
