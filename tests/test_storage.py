"""Storage on SQLite and PostgreSQL: migrations, atomic reservations, exactly-once transitions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlmodel import SQLModel

from bot.quotas.windows import day_window
from storage.engine import create_engine, reader
from storage.jobs import JobStore, user_subject
from storage.migrate import migrate
from storage.models import Delivery, Job, JobStatus, Reservation, utcnow
from storage.urls import normalize_database_url
from storage.usage import Hold, HoldKind, LimitReached


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[JobStore]:
    engine = create_engine(database_url)
    await migrate(engine)
    yield JobStore(engine)
    await engine.dispose()


def make_job(job_id: str, user: str = "U1", estimate: int = 3000) -> Job:
    return Job(
        id=job_id,
        platform="slack",
        workspace="T1",
        channel="C1",
        user_id=user,
        command="imagine",
        model="flux-schnell",
        model_ref="black-forest-labs/flux-schnell",
        prompt="a red fox 🦊",
        input={"prompt": "a red fox 🦊"},
        usage_period=day_period(utcnow()),
        estimated_micros=estimate,
    )


def day_period(moment):
    return day_window(moment).key


MONTH = "month:" + f"{utcnow():%Y-%m}"


def user_limit(
    max_jobs: int | None, user: str = "U1", usd: int | None = None, inflight: int | None = None
) -> list[Hold]:
    """The three holds of one user; None is unlimited, 0 allows none."""
    subject = user_subject("slack", "T1", user)
    return [
        Hold(HoldKind.JOBS, "user", subject, day_period(utcnow()), max_jobs),
        Hold(HoldKind.USD, "user", subject, MONTH, usd),
        Hold(HoldKind.IN_FLIGHT, "user", subject, "live", inflight),
    ]


def test_database_urls_are_normalised_to_async_drivers() -> None:
    assert normalize_database_url("sqlite:///x.db") == "sqlite+aiosqlite:///x.db"
    assert normalize_database_url("postgres://u@h/db") == "postgresql+asyncpg://u@h/db"
    assert normalize_database_url("postgresql://u@h/db") == "postgresql+asyncpg://u@h/db"
    with pytest.raises(ValueError, match="sqlite"):
        normalize_database_url("mysql://u@h/db")


async def test_migrations_match_the_models_and_run_twice(empty_database_url: str) -> None:
    engine = create_engine(empty_database_url)
    try:
        await migrate(engine)
        await migrate(engine)  # already at head: nothing to do, no error
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), SQLModel.metadata)
            )
        assert diff == []
    finally:
        await engine.dispose()


async def test_job_round_trips_unicode_and_json(store: JobStore) -> None:
    await store.reserve_and_insert(make_job("j1"), user_limit(None))
    job = await store.get("j1")
    assert job is not None
    assert job.prompt == "a red fox 🦊"
    assert job.input == {"prompt": "a red fox 🦊"}
    assert job.created_at.tzinfo is not None
    assert job.status == JobStatus.QUEUED and job.reservation == Reservation.HELD


async def test_concurrent_reservations_never_pass_the_limit(store: JobStore) -> None:
    async def attempt(index: int) -> bool:
        try:
            await store.reserve_and_insert(make_job(f"j{index}"), user_limit(5))
        except LimitReached:
            return False
        return True

    results = await asyncio.gather(*(attempt(i) for i in range(40)))
    assert sum(results) == 5
    assert await store.count() == 5
    counter = await store.counter("user", "slack:T1:U1", day_period(utcnow()))
    assert counter is not None and counter.jobs == 5
    money = await store.counter("user", "slack:T1:U1", MONTH)
    assert money is not None and money.reserved_micros == 5 * 3000


async def test_refused_reservation_creates_nothing(store: JobStore) -> None:
    await store.reserve_and_insert(make_job("j1"), user_limit(1))
    with pytest.raises(LimitReached) as refused:
        await store.reserve_and_insert(make_job("j2"), user_limit(1))
    assert refused.value.hold.limit == 1
    assert await store.get("j2") is None
    other_user = make_job("j3", user="U2")
    await store.reserve_and_insert(other_user, user_limit(1, user="U2"))


async def test_status_only_moves_forward(store: JobStore) -> None:
    await store.reserve_and_insert(make_job("j1"), user_limit(None))
    assert await store.advance("j1", JobStatus.PROCESSING)
    assert not await store.advance("j1", JobStatus.STARTING)  # late `start` webhook
    assert not await store.advance("j1", JobStatus.PROCESSING)  # duplicate
    assert await store.record_progress("j1", 50)
    assert not await store.record_progress("j1", 25)
    job = await store.get("j1")
    assert job is not None and job.status == JobStatus.PROCESSING and job.progress == 50


async def test_finish_settles_once_and_failed_jobs_give_the_job_back(store: JobStore) -> None:
    period = day_period(utcnow())
    await store.reserve_and_insert(make_job("ok"), user_limit(None))
    await store.reserve_and_insert(make_job("bad"), user_limit(None))
    ok, bad = await store.get("ok"), await store.get("bad")
    assert ok is not None and bad is not None
    assert await store.finish(ok, JobStatus.SUCCEEDED, actual_micros=3000, give_back_job=False)
    assert not await store.finish(ok, JobStatus.SUCCEEDED, actual_micros=3000, give_back_job=False)
    assert not await store.advance("ok", JobStatus.PROCESSING)
    assert await store.finish(bad, JobStatus.FAILED, actual_micros=0, give_back_job=True)
    counter = await store.counter("user", "slack:T1:U1", period)
    money = await store.counter("user", "slack:T1:U1", MONTH)
    live = await store.counter("user", "slack:T1:U1", "live")
    assert counter is not None and money is not None and live is not None
    assert counter.jobs == 1  # the failed job gave its count back
    assert (money.reserved_micros, money.spent_micros) == (0, 3000)
    assert live.jobs == 0
    ok = await store.get("ok")
    assert ok is not None and ok.delivery == Delivery.PENDING
    assert ok.reservation == Reservation.SETTLED


async def test_a_settlement_changes_each_counter_it_holds_once_and_raises_its_alerts(
    store: JobStore,
) -> None:
    """A user's and a workspace's holds, six counter rows in all: each released or given back
    once, what was spent added to both budgets, and an alert for each budget it crossed."""
    workspace = "slack:T1"
    holds = [
        *user_limit(None, usd=4000),
        Hold(HoldKind.JOBS, "workspace", workspace, day_period(utcnow()), None),
        Hold(HoldKind.USD, "workspace", workspace, MONTH, 4200),
        Hold(HoldKind.IN_FLIGHT, "workspace", workspace, "live", None),
    ]
    await store.reserve_and_insert(make_job("both"), holds)
    job = await store.get("both")
    assert job is not None
    finished = await store.finish(job, JobStatus.SUCCEEDED, actual_micros=3500, give_back_job=False)
    assert finished is not None and finished.alerts_due
    for scope, subject in (("user", "slack:T1:U1"), ("workspace", workspace)):
        day = await store.counter(scope, subject, day_period(utcnow()))
        money = await store.counter(scope, subject, MONTH)
        live = await store.counter(scope, subject, "live")
        assert day is not None and money is not None and live is not None
        assert (day.jobs, live.jobs) == (1, 0)
        assert (money.reserved_micros, money.spent_micros) == (0, 3500)
    async with store.engine.connect() as conn:
        alerts = (
            await conn.execute(text("SELECT scope, threshold FROM budget_alert ORDER BY scope"))
        ).all()
    assert [tuple(row) for row in alerts] == [("user", 80), ("workspace", 80)]


async def test_delivery_is_claimed_by_exactly_one(store: JobStore) -> None:
    await store.reserve_and_insert(make_job("j1"), user_limit(None))
    job = await store.get("j1")
    assert job is not None
    await store.finish(job, JobStatus.SUCCEEDED, actual_micros=0, give_back_job=False)
    claims = await asyncio.gather(
        *(store.claim_delivery("j1", timedelta(minutes=10)) for _ in range(10))
    )
    assert claims.count(True) == 1
    assert [j.id for j in await store.undelivered()] == []
    # A claim whose lease lapsed (its holder died, its renewals with it) can be taken over.
    later = utcnow() + timedelta(minutes=11)
    assert [j.id for j in await store.undelivered(later)] == ["j1"]
    await store.finish_delivery("j1")
    done = await store.get("j1")
    assert done is not None and done.delivery == Delivery.DELIVERED


async def test_a_lapsed_claim_cannot_fail_the_delivery_its_successor_holds(
    store: JobStore,
) -> None:
    """A claimant whose lease lapsed while it stalled, and that then met an error it takes for
    permanent, marked the delivery failed for good under the instance that had taken it over:
    that one's passing error could then not give it back, and the result was never posted."""
    await store.reserve_and_insert(make_job("j1"), user_limit(None))
    job = await store.get("j1")
    assert job is not None
    await store.finish(job, JobStatus.SUCCEEDED, actual_micros=0, give_back_job=False)
    assert await store.claim_delivery("j1", timedelta(seconds=-1))  # claim 1, lapsed at once
    assert await store.claim_delivery("j1", timedelta(minutes=10))  # claim 2 takes it over
    await store.finish_delivery("j1", "Forbidden", attempt=1)
    held = await store.get("j1")
    assert held is not None and held.delivery == Delivery.DELIVERING
    await store.release_delivery("j1", "ServiceUnavailable", attempt=2)
    passed = await store.get("j1")
    assert passed is not None and passed.delivery == Delivery.PENDING


async def test_finish_can_claim_the_delivery_for_its_caller(store: JobStore) -> None:
    """The webhook that finishes a job delivers it: nobody else may claim it meanwhile."""
    await store.reserve_and_insert(make_job("j1"), user_limit(None))
    job = await store.get("j1")
    assert job is not None
    finished = await store.finish(
        job, JobStatus.SUCCEEDED, actual_micros=500, give_back_job=False, claim=True
    )
    assert finished is not None
    assert finished.job.status == JobStatus.SUCCEEDED and finished.job.actual_micros == 500
    assert finished.job.delivery == Delivery.DELIVERING and finished.job.delivery_attempts == 1
    assert finished.job.reservation == Reservation.SETTLED
    assert not await store.claim_delivery("j1", timedelta(minutes=10))
    assert await store.undelivered() == []
    stored = await store.get("j1")
    assert stored is not None and stored.model_dump() == finished.job.model_dump()


async def test_a_read_holds_no_transaction_open(store: JobStore) -> None:
    """Reads send no BEGIN: each statement is its own transaction (on PostgreSQL two round
    trips fewer per read), and nothing is left open to hold back a writer or a vacuum."""
    engine = store.engine
    async with reader(engine).connect() as conn:
        if engine.dialect.name == "postgresql":
            ids = [
                (await conn.execute(text("SELECT pg_current_xact_id()::text"))).scalar_one()
                for _ in range(2)
            ]
            assert ids[0] != ids[1]  # two transactions, not one
        else:
            await conn.execute(text("SELECT 1"))
            assert not conn.sync_connection.connection.driver_connection.in_transaction
