"""storage.clock: instances on one PostgreSQL database time claims and leases by the database's
clock, so a machine whose clock is off (a VM resumed from a pause, time sync broken) neither
takes over a delivery another instance still holds (the result posted twice) nor is taken over.

A machine's clock off by a minute is simulated by shifting `storage.clock.local_now`; the
database's clock (`clock_timestamp()`) is the server's own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from storage import clock
from storage.engine import create_engine
from storage.jobs import JobStore
from storage.models import JobStatus, utcnow
from tests.harness import make_settings
from tests.test_storage import make_job, user_limit

SKEW = timedelta(seconds=60)  # longer than a delivery's lease: the clock is that far off
LEASE = timedelta(seconds=20)


@pytest.fixture(autouse=True)
def _offset_restored() -> Iterator[None]:
    """The offset is the process's: a test that measures a skewed clock leaves none behind."""
    kept = clock.offset()
    yield
    clock.set_offset(kept)


def clock_off_by(monkeypatch: pytest.MonkeyPatch, delta: timedelta) -> None:
    real = clock.local_now
    monkeypatch.setattr(clock, "local_now", lambda: real() + delta)


@pytest.fixture
async def engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(postgres_url)
    yield engine
    await engine.dispose()


async def database_now(engine: AsyncEngine) -> datetime:
    async with engine.connect() as conn:
        return (await conn.execute(text("SELECT clock_timestamp()"))).scalar_one()


async def test_a_machine_a_minute_ahead_reads_the_databases_time_and_is_told(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clock_off_by(monkeypatch, SKEW)
    caplog.set_level(logging.WARNING, logger="storage.clock")
    await clock.sync(engine)
    assert abs(utcnow() - await database_now(engine)) < timedelta(seconds=1)
    [said] = [r.getMessage() for r in caplog.records]
    assert said.startswith("this machine's clock is 60.0 s ahead of the database's")


async def test_an_instance_whose_clock_is_ahead_does_not_take_over_a_lease_still_held(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Instance A (a right clock) finishes a job and claims its delivery for LEASE; instance B,
    its machine a minute ahead, sweeps for deliveries to take over. Timed by its own clock, B
    found A's lease lapsed and posted the result too."""
    store = JobStore(engine)
    await store.reserve_and_insert(make_job("j1"), user_limit(5))
    assert await store.attach_prediction("j1", "p-j1")
    job = await store.get("j1")
    assert job is not None
    claimed = await store.finish(
        job, JobStatus.SUCCEEDED, actual_micros=3000, give_back_job=False, claim=True, lease=LEASE
    )
    assert claimed is not None

    clock_off_by(monkeypatch, SKEW)  # now the process is instance B
    await clock.sync(engine)
    assert [j.id for j in await store.undelivered()] == []


async def test_sqlite_is_one_machines_clock_and_is_not_asked(sqlite_url: str) -> None:
    engine = create_engine(sqlite_url)
    asked: list[str] = []
    try:
        async with engine.connect():  # the engine's connection made: only sync's would count
            pass
        for watched in {engine.sync_engine}:
            event.listen(watched, "before_cursor_execute", lambda *a: asked.append(a[2]))
        assert await clock.sync(engine) == clock.offset()
    finally:
        await engine.dispose()
    assert asked == []


async def test_a_started_runtime_times_by_the_database_and_keeps_measuring(
    sandbox_server, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.runtime import Runtime

    clock_off_by(monkeypatch, -SKEW)
    runtime = await Runtime.start(make_settings(sandbox_server, postgres_url, webhooks=False))
    try:
        assert abs(utcnow() - await database_now(runtime.engine)) < timedelta(seconds=1)
        assert runtime.clock_keeper is not None and not runtime.clock_keeper.done()
    finally:
        await runtime.aclose()
    assert runtime.clock_keeper.cancelled() or runtime.clock_keeper.done()


async def test_a_database_that_does_not_answer_the_clock_at_start_up_delays_no_start(
    sandbox_server, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker started as the server restarts: its start-up goes on (measured later), where a
    start refused for the clock would stop `conjure serve --workers N` whole."""
    from sqlalchemy.exc import OperationalError

    from bot.runtime import Runtime

    clock_off_by(monkeypatch, SKEW)
    measure = clock.sync
    unanswered = [OperationalError("SELECT clock_timestamp()", {}, Exception("restarting"))]

    async def restarting(engine: AsyncEngine) -> timedelta:
        if unanswered:
            raise unanswered.pop()
        return await measure(engine)

    monkeypatch.setattr(clock, "sync", restarting)
    monkeypatch.setattr(clock, "RETRY_AFTER", 0.05)
    runtime = await Runtime.start(make_settings(sandbox_server, postgres_url, webhooks=False))
    try:
        for _ in range(100):  # measured again soon after, not in RESYNC_EVERY
            if abs(utcnow() - await database_now(runtime.engine)) < timedelta(seconds=1):
                break
            await asyncio.sleep(0.02)
        assert abs(utcnow() - await database_now(runtime.engine)) < timedelta(seconds=1)
    finally:
        await runtime.aclose()


async def test_a_measurement_that_hangs_or_fails_oddly_holds_no_start_and_stops_no_keeper(
    sandbox_server, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host that drops packets holds the first measurement (asyncpg waits a minute to
    connect): the start-up goes on after START_WAIT. A later measurement failing in a way no
    one expected (a pooler's refusal raised raw) does not end the keeper: it measures again."""
    from bot.runtime import Runtime

    clock_off_by(monkeypatch, SKEW)
    measure = clock.sync
    faults: list[str] = ["hang", "odd"]

    async def flaky(engine: AsyncEngine) -> timedelta:
        fault = faults.pop(0) if faults else None
        if fault == "hang":
            await asyncio.sleep(60)
        if fault == "odd":
            raise RuntimeError("a raw driver error")
        return await measure(engine)

    monkeypatch.setattr(clock, "sync", flaky)
    monkeypatch.setattr(clock, "START_WAIT", 0.1)
    monkeypatch.setattr(clock, "RETRY_AFTER", 0.05)
    started = asyncio.get_running_loop().time()
    runtime = await Runtime.start(make_settings(sandbox_server, postgres_url, webhooks=False))
    try:
        assert asyncio.get_running_loop().time() - started < 5
        for _ in range(100):  # the odd failure, then a measurement
            if not faults and abs(utcnow() - await database_now(runtime.engine)) < SKEW / 2:
                break
            await asyncio.sleep(0.02)
        assert abs(utcnow() - await database_now(runtime.engine)) < timedelta(seconds=1)
        assert runtime.clock_keeper is not None and not runtime.clock_keeper.done()
    finally:
        await runtime.aclose()
