"""storage.compiled_once: the job path's statements as SQL compiled once (SQLite's through
storage.sqlite_direct, PostgreSQL's through storage.compiled_connection), with the same rows,
the same errors and the same money as through SQLAlchemy's execution path."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import asyncpg
import pytest
from sqlalchemy import Column, Integer, MetaData, Table, event, select, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import DBAPIError

from storage import compiled_once, idle_ping
from storage.engine import create_engine, statement_engines, write
from storage.jobs import DuplicateRequest, JobStore
from storage.migrate import migrate
from storage.models import Job, JobStatus
from storage.quotas import QuotaStore
from storage.safety import SafetyStore
from storage.usage import LimitReached
from tests.test_storage import make_job, user_limit


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[JobStore]:
    engine = create_engine(database_url)
    await migrate(engine)
    yield JobStore(engine)
    await engine.dispose()


class Sent:
    """Every statement sent, and whether it went compiled once (no SQLAlchemy context)."""

    def __init__(self, store: JobStore) -> None:
        self.compiled: list[str] = []
        self.through_sqlalchemy: list[str] = []
        for engine in statement_engines(store.engine):
            event.listen(engine, "before_cursor_execute", self._note)

    def _note(
        self, _conn: Any, _cursor: Any, sql: str, _params: Any, context: Any, _m: Any
    ) -> None:
        (self.compiled if context is None else self.through_sqlalchemy).append(sql)


async def lifecycle(store: JobStore, job_id: str) -> list[Job | None]:
    """A job from its command to its delivery, as the job path runs it; what each step
    returned."""
    seen: list[Job | None] = []
    await store.reserve_and_insert(make_job(job_id), user_limit(5, usd=1_000_000, inflight=2))
    seen.append(await store.get(job_id))
    assert await store.attach_prediction(job_id, "p-" + job_id)
    seen.append(await store.advance(job_id, JobStatus.PROCESSING, progress=10))
    seen.append(await store.record_progress(job_id, 60))
    seen.append(await store.advance(job_id, JobStatus.STARTING))  # backwards: stale, None
    job = await store.get(job_id)
    assert job is not None
    finished = await store.finish(
        job,
        JobStatus.SUCCEEDED,
        actual_micros=2_500,
        give_back_job=False,
        claim=True,
        output=["https://replicate.delivery/x/out.webp"],
    )
    assert finished is not None
    seen.append(finished.job)
    again = await store.finish(job, JobStatus.SUCCEEDED, actual_micros=2_500, give_back_job=False)
    assert again is None  # a second copy of the outcome changes nothing
    await store.update_fields(job_id, destination={"channel": "C1", "ts": "1.2", "token": "t"})
    await store.finish_delivery(job_id)
    seen.append(await store.get(job_id))
    return seen


async def counters(store: JobStore) -> dict[str, tuple[int, int, int]]:
    """The user's counters: jobs, micro-dollars reserved, micro-dollars spent."""
    found = {
        hold.kind: await store.counter(hold.scope, hold.subject, hold.period)
        for hold in user_limit(5)
    }
    return {
        str(kind): (c.jobs, c.reserved_micros, c.spent_micros) for kind, c in found.items() if c
    }


def timeless(job: Job | None) -> dict[str, Any] | None:
    if job is None:
        return None
    # When it happened differs between the two runs; whether it did may not.
    return {
        k: "<a time>" if isinstance(v, datetime) else v
        for k, v in job.model_dump().items()
        if k != "id"
    }


async def test_the_job_path_goes_compiled_once(store: JobStore) -> None:
    await lifecycle(store, "j0")  # the window's first job creates its counters (once a day)
    sent = Sent(store)
    await lifecycle(store, "j1")
    assert sent.through_sqlalchemy == []
    assert len(sent.compiled) >= 15
    assert any(sql.startswith("INSERT INTO job ") for sql in sent.compiled)
    assert any(sql.startswith("UPDATE usage_counter ") for sql in sent.compiled)


async def test_a_windows_first_job_and_the_reads_of_every_command_and_sweep_go_compiled_once(
    store: JobStore,
) -> None:
    """Besides the job path: a window's new counters, the safety rules (read for every command),
    the queued workspaces and the unsent alerts (read by every sweep)."""
    sent = Sent(store)
    await lifecycle(store, "j0")
    assert await SafetyStore(store.engine).rules("slack", "T1") == []
    assert await store.waiting_workspaces() == []
    assert await QuotaStore(store.engine).unsent_alerts() == []
    assert sent.through_sqlalchemy == []
    assert any(sql.startswith("INSERT INTO usage_counter ") for sql in sent.compiled)
    for table in ("safety_rule", "budget_alert"):
        assert any(f"FROM {table}" in sql for sql in sent.compiled)
    assert any(sql.startswith("SELECT DISTINCT job.platform") for sql in sent.compiled)


async def test_rows_and_money_are_the_same_as_through_sqlalchemy(
    sqlite_store: JobStore, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    await same_as_through_sqlalchemy(
        sqlite_store, f"sqlite+aiosqlite:///{tmp_path / 'slow.db'}", monkeypatch
    )


async def test_rows_and_money_are_the_same_as_through_sqlalchemy_on_postgres(
    postgres_url: str, empty_postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = create_engine(postgres_url)
    try:
        await same_as_through_sqlalchemy(JobStore(engine), empty_postgres_url, monkeypatch)
    finally:
        await engine.dispose()


async def same_as_through_sqlalchemy(
    store: JobStore, reference_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job's life on `store` compiled once, and on a new database at `reference_url` through
    SQLAlchemy: the same rows at each step, the same counters."""
    fast_rows = await lifecycle(store, "j1")
    fast_counters = await counters(store)

    monkeypatch.setattr(compiled_once, "_BUILT_ONCE", {})  # nothing is compiled once
    engine = create_engine(reference_url)
    await migrate(engine)
    slow = JobStore(engine)
    sent = Sent(slow)
    slow_rows = await lifecycle(slow, "j1")
    slow_counters = await counters(slow)
    await engine.dispose()

    assert sent.compiled == []  # the reference really went through SQLAlchemy
    assert [timeless(row) for row in fast_rows] == [timeless(row) for row in slow_rows]
    assert (
        fast_counters
        == slow_counters
        == {
            "jobs": (1, 0, 0),  # the day's job stays counted
            "usd": (0, 0, 2_500),  # the estimate given back, what Replicate billed spent
            "in_flight": (0, 0, 0),
        }
    )
    delivered = fast_rows[-1]
    assert delivered is not None
    assert delivered.destination == {"channel": "C1", "ts": "1.2"}  # the token stripped
    assert delivered.output == ["https://replicate.delivery/x/out.webp"]
    assert delivered.completed_at is not None and delivered.completed_at.tzinfo is not None


async def test_errors_are_sqlalchemys_and_roll_everything_back(store: JobStore) -> None:
    first = make_job("j1")
    first.request_key = "slack:T1:trigger-1"
    await store.reserve_and_insert(first, user_limit(5))
    copy = make_job("j2")
    copy.request_key = "slack:T1:trigger-1"
    with pytest.raises(DuplicateRequest):  # the unique key's IntegrityError, as SQLAlchemy's
        await store.reserve_and_insert(copy, user_limit(5))

    with pytest.raises(LimitReached):
        await store.reserve_and_insert(make_job("j3"), user_limit(1))
    async with store.reader.connect() as conn:
        ids = [row[0] for row in (await conn.execute(select(Job.id).order_by(Job.id))).all()]
    assert ids == ["j1"]  # neither the copy nor the job over the limit was kept
    counter = await store.counter("user", user_limit(1)[0].subject, user_limit(1)[0].period)
    assert counter is not None and counter.jobs == 1


def test_a_statement_that_needs_sqlalchemy_is_not_compiled_once() -> None:
    table = Table(
        "t",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("n", Integer, default=lambda: 5),
    )
    dialect = sqlite.dialect()
    with_default = compiled_once.built_once(table.insert())
    assert compiled_once.compiled_once(with_default, dialect, {"id": 1}) is None  # n's default
    whole = compiled_once.compiled_once(with_default, dialect, {"id": 1, "n": 2})
    assert whole is not None and whole.sql == "INSERT INTO t (id, n) VALUES (?, ?)"
    assert compiled_once.compiled_once(table.insert(), dialect, {"id": 1, "n": 2}) is None
    assert compiled_once.compiled_once(text("SELECT 1"), dialect, {}) is None


def test_engines_alike_share_their_compiled_statements_and_others_do_not() -> None:
    """Each test opens its own engine: a statement compiled for one serves every engine with the
    same settings (so the suite compiles the job path once), never one that compiles otherwise."""
    table = Table("shared", MetaData(), Column("id", Integer, primary_key=True))
    statement = compiled_once.built_once(table.select().where(table.c.id == 1))
    first = compiled_once.compiled_once(statement, sqlite.dialect(), {})
    assert first is not None
    assert compiled_once.compiled_once(statement, sqlite.dialect(), {}) is first
    other_json = sqlite.dialect(json_serializer=lambda value: "{}")
    assert compiled_once.compiled_once(statement, other_json, {}) is not first
    named = sqlite.dialect(paramstyle="named")  # compiles other SQL: not compiled once at all
    assert compiled_once.compiled_once(statement, named, {}) is None


def test_a_dialect_that_has_worked_out_a_memoized_value_still_shares() -> None:
    """SQLAlchemy memoizes some of a dialect's methods on the dialect itself the first time they
    run (setting an isolation level does): a per-dialect function, not a setting. A PostgreSQL
    engine whose autocommit sibling had run one compiled every statement again, once an engine
    (the suite's PostgreSQL engines shared nothing)."""
    table = Table("memoized", MetaData(), Column("id", Integer, primary_key=True))
    statement = compiled_once.built_once(table.select().where(table.c.id == 1))
    fresh = sqlite.dialect()
    first = compiled_once.compiled_once(statement, fresh, {})
    worked = sqlite.dialect()
    worked._gen_allowed_isolation_levels(None)  # memoized on `worked` by SQLAlchemy
    assert "_gen_allowed_isolation_levels" in vars(worked)
    assert compiled_once.compiled_once(statement, worked, {}) is first


async def test_a_connection_dropped_under_a_compiled_statement_is_replaced(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As SQLAlchemy's own execution does: the error says the connection was invalidated, and
    the pool opens a new one for the next statement (no ping: the connection was not idle)."""
    monkeypatch.setattr(idle_ping, "IDLE_BEFORE_PING", 3600)
    engine = create_engine(postgres_url, pool_size=1, max_overflow=0)
    store = JobStore(engine)
    try:
        await store.reserve_and_insert(make_job("j1"), user_limit(5))
        async with write(engine) as conn:
            first = int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())
        admin = await asyncpg.connect(postgres_url.replace("+asyncpg", ""))
        try:
            await admin.execute("SELECT pg_terminate_backend($1)", first)
        finally:
            await admin.close()
        with pytest.raises(DBAPIError) as dropped:
            await store.update_fields("j1", progress=50)
        assert dropped.value.connection_invalidated
        await store.update_fields("j1", progress=60)  # on a new connection
        job = await store.get("j1")
        assert job is not None and job.progress == 60
        async with write(engine) as conn:
            second = int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())
        assert second != first
    finally:
        await engine.dispose()
