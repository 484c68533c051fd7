"""bot.start_claims: a job waiting here to start is touched while it waits, and a database that
fails one touch does not stop the next."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from bot.start_claims import StartClaims
from storage.jobs import JobStore
from tests.test_storage import make_job, user_limit

TAKEOVER = timedelta(milliseconds=300)  # touched every 0.1 s


@pytest.fixture
def store(sqlite_store: JobStore) -> JobStore:
    return sqlite_store


async def test_a_held_job_is_touched_until_it_is_let_go(store: JobStore) -> None:
    job = make_job("held1")
    await store.reserve_and_insert(job, user_limit(5))
    claims = StartClaims(store, lambda: TAKEOVER)
    recorded = job.updated_at
    with claims.holding(job):
        assert "held1" in claims
        await asyncio.sleep(0.5)
        touched = (await store.get("held1")).updated_at  # type: ignore[union-attr]
        assert touched > recorded and touched == job.updated_at
    assert "held1" not in claims
    await asyncio.sleep(0.25)
    assert (await store.get("held1")).updated_at == touched  # type: ignore[union-attr]


async def test_a_failed_touch_is_logged_and_the_next_one_made(
    store: JobStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    job = make_job("held2")
    await store.reserve_and_insert(job, user_limit(5))
    touch = store.touch_unstarted
    failures = [OperationalError("UPDATE job", {}, Exception("database is locked"))]

    async def flaky(*args: Any, **kwargs: Any) -> bool:
        if failures:
            raise failures.pop()
        return await touch(*args, **kwargs)

    monkeypatch.setattr(store, "touch_unstarted", flaky)
    claims = StartClaims(store, lambda: TAKEOVER)
    recorded = job.updated_at
    with claims.holding(job):
        await asyncio.sleep(0.6)
    assert "could not keep its start claimed" in caplog.text
    assert (await store.get("held2")).updated_at > recorded  # type: ignore[union-attr]


async def test_a_job_taken_over_elsewhere_is_not_touched_back(store: JobStore) -> None:
    job = make_job("held3")
    await store.reserve_and_insert(job, user_limit(5))
    claims = StartClaims(store, lambda: TAKEOVER)
    other = await store.get("held3")
    assert other is not None
    assert await StartClaims(store, lambda: TAKEOVER).touch(other)  # another instance claims it
    with claims.holding(job):
        assert not await claims.touch(job)  # this one's view is stale: it lost the claim


async def test_a_job_claimed_and_started_here_while_the_keeper_waited_is_not_said_taken_over(
    store: JobStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The keeper found the job's claim due for a touch, but waited for the job's lock while
    this process's own start held it (its claim touched, slowly) and then started the job: the
    claim was fresh and the job this process's, not "taken over while it waited"."""
    job = make_job("held4")
    await store.reserve_and_insert(job, user_limit(5))
    touch = store.touch_unstarted

    async def slow(*args: Any, **kwargs: Any) -> bool:
        await asyncio.sleep(0.15)  # the keeper wakes meanwhile, and waits for the lock
        return await touch(*args, **kwargs)

    claims = StartClaims(store, lambda: TAKEOVER)
    with claims.holding(job):
        await asyncio.sleep(0.05)
        monkeypatch.setattr(store, "touch_unstarted", slow)
        assert await claims.touch(job)  # this process's start claims it, as _launch does
        monkeypatch.setattr(store, "touch_unstarted", touch)
        assert await store.attach_prediction("held4", "p-held4")  # and starts it
        await asyncio.sleep(0.05)
    assert "taken over" not in caplog.text
