"""PostgreSQL waits that end: a row lock held by a hung instance, a statement that would run for
ever, a transaction left open by a frozen process.

Without timeouts, a Conjure stopped (SIGSTOP, a frozen host) inside a transaction kept its row
locks for ever, and every statement that needed those rows waited for ever behind it: a
person's slash command got no answer at all, a webhook's handler never returned. Now a lock is
waited for at most `storage.engine.LOCK_TIMEOUT` (the command is refused with the same "cannot
reach its database, try again" as any database failure, nothing charged or recorded), no
statement runs past STATEMENT_TIMEOUT, and the server ends a transaction idle for
IDLE_IN_TRANSACTION_TIMEOUT, freeing its locks. Migrations alone wait as long as they need.
The tests lower those constants to keep fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from bot.quotas.windows import day_window
from storage import engine as engine_module
from storage.engine import create_engine, reader, write
from storage.jobs import JobStore, user_subject
from storage.migrate import migrate
from storage.models import JobStatus, utcnow
from tests.fakes.slack_api import TEAM_ID
from tests.slack_harness import SlackConjure, SlashResult, running_slack_conjure
from tests.tcp_relay import pipe
from tests.test_storage import make_job, user_limit

USER = "U0ADA"  # the harness's person
# storage/migrations/env.py's MIGRATION_LOCK (importing env.py runs Alembic's environment).
MIGRATION_LOCK = 0x636F6E6A75726531
PATIENCE = 8.0  # seconds a test waits for what a timeout must end, before calling it a hang


def _dsn(url: str) -> str:
    """The test database's URL for plain asyncpg: another process's connection."""
    return url.replace("postgresql+asyncpg://", "postgresql://")


def _short_timeouts(
    monkeypatch: pytest.MonkeyPatch,
    *,
    lock: float = 0.5,
    statement: float = 30.0,
    idle_in_transaction: float = 10.0,
) -> None:
    monkeypatch.setattr(engine_module, "LOCK_TIMEOUT", lock)
    monkeypatch.setattr(engine_module, "STATEMENT_TIMEOUT", statement)
    monkeypatch.setattr(engine_module, "IDLE_IN_TRANSACTION_TIMEOUT", idle_in_transaction)


async def _rows(url: str, table: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(_dsn(url))
    try:
        return [dict(row) for row in await conn.fetch(f"SELECT * FROM {table} ORDER BY id")]
    finally:
        await conn.close()


async def _answer(conjure: SlackConjure, sent: SlashResult) -> str:
    """What the person was told: in the ack itself, or through the command's response_url."""
    if sent.ack.get("text"):
        return str(sent.ack["text"])
    while not conjure.fake.responses_to(sent.response_id):
        await asyncio.sleep(0.02)
    return conjure.fake.responses_to(sent.response_id)[0].text


async def test_a_command_behind_a_hung_instances_row_lock_is_answered_and_charges_nothing(
    sandbox_server: Any, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another instance hung in the middle of reserving for this person (its transaction open,
    the person's counters locked). Their next command is answered within seconds, as a
    database that cannot be reached is, with nothing charged and no job recorded; once the lock
    is gone, the command after it runs."""
    _short_timeouts(monkeypatch, lock=0.5)
    async with running_slack_conjure(sandbox_server, postgres_url) as conjure:
        await conjure.slash("/imagine", "a red fox")  # the person's counters now exist
        await conjure.settle(sandbox_server)
        counters = await _rows(postgres_url, "usage_counter")
        jobs = await _rows(postgres_url, "job")
        assert len(jobs) == 1 and jobs[0]["status"] == JobStatus.SUCCEEDED.value

        hung = await asyncpg.connect(_dsn(postgres_url))
        try:
            await hung.execute("BEGIN")
            locked = await hung.fetch(
                "SELECT id FROM usage_counter WHERE scope = 'user' AND subject = $1 FOR UPDATE",
                user_subject("slack", TEAM_ID, USER),
            )
            assert locked  # the jobs, dollars and in-flight counters of the person
            started = time.monotonic()
            async with asyncio.timeout(PATIENCE):  # without a lock timeout: no answer, ever
                sent = await conjure.slash("/imagine", "a blue fox")
                answer = await _answer(conjure, sent)
            waited = time.monotonic() - started
        finally:
            await hung.close()  # the hung instance's transaction ends: the lock is gone

        assert sent.response.status_code == 200
        assert "cannot reach its database" in answer and "try again" in answer, answer
        assert "Traceback" not in answer
        assert waited < 3.0, waited  # within Slack's (and Discord's) 3 seconds
        # Nothing half done: not a counter changed, no job, no prediction.
        assert await _rows(postgres_url, "usage_counter") == counters
        assert await _rows(postgres_url, "job") == jobs
        assert sandbox_server.sandbox.create_count == 1

        again = await conjure.slash("/imagine", "a green fox")
        assert again.response.status_code == 200 and again.ack == {}  # taken: a job recorded
        await conjure.settle(sandbox_server)
        assert sandbox_server.sandbox.create_count == 2
        assert await conjure.runtime.store.count() == 2
        day = await conjure.runtime.store.counter(
            "user", user_subject("slack", TEAM_ID, USER), day_window(utcnow()).key
        )
        assert day is not None and day.jobs == 2


async def test_a_result_behind_a_locked_job_row_fails_whole_and_goes_through_after(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A webhook's terminal update waits on the job's row (locked by a hung instance): it fails
    after the lock timeout with SQLAlchemy's error (the handler answers 500, Replicate sends it
    again), settling nothing; once the lock is gone, the same update charges once."""
    _short_timeouts(monkeypatch, lock=0.3)
    engine = create_engine(postgres_url)
    store = JobStore(engine)
    hung = await asyncpg.connect(_dsn(postgres_url))
    try:
        job = make_job("j1")
        await store.reserve_and_insert(job, user_limit(5))
        counters = await _rows(postgres_url, "usage_counter")
        await hung.execute("BEGIN")
        await hung.execute("SELECT id FROM job WHERE id = 'j1' FOR UPDATE")
        with pytest.raises(DBAPIError, match="lock timeout"):
            async with asyncio.timeout(PATIENCE):
                await store.finish(
                    job, JobStatus.SUCCEEDED, actual_micros=2000, give_back_job=False
                )
        assert await _rows(postgres_url, "usage_counter") == counters
        unfinished = await store.get("j1")
        assert unfinished is not None and unfinished.job_status is JobStatus.QUEUED
        await hung.execute("ROLLBACK")
        finished = await store.finish(
            job, JobStatus.SUCCEEDED, actual_micros=2000, give_back_job=False
        )
        assert finished is not None and finished.job.actual_micros == 2000
    finally:
        await hung.close()
        await engine.dispose()


async def test_no_statement_runs_for_ever(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A statement that would run on (a huge scan, a server in trouble) is cancelled by the
    server after STATEMENT_TIMEOUT, on the read path (autocommit) and the write path alike."""
    _short_timeouts(monkeypatch, statement=0.3)
    engine = create_engine(postgres_url)
    try:
        started = time.monotonic()
        with pytest.raises(DBAPIError, match="statement timeout"):
            async with reader(engine).connect() as conn:
                await conn.execute(text("SELECT pg_sleep(3)"))
        with pytest.raises(DBAPIError, match="statement timeout"):
            async with write(engine) as conn:
                await conn.execute(text("SELECT pg_sleep(3)"))
        assert time.monotonic() - started < 2.5
        async with reader(engine).connect() as conn:  # the connections are still good
            assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await engine.dispose()


async def test_a_frozen_instances_open_transaction_is_ended_and_its_locks_freed(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Conjure frozen inside a transaction (here: one that stops sending) holds its row locks
    only until the server ends its session after IDLE_IN_TRANSACTION_TIMEOUT; its transaction
    is rolled back whole, and it learns so as a database error when it wakes."""
    _short_timeouts(monkeypatch, idle_in_transaction=0.5)
    engine = create_engine(postgres_url)
    store = JobStore(engine)
    other = await asyncpg.connect(_dsn(postgres_url))
    try:
        await store.reserve_and_insert(make_job("j1"), user_limit(5))
        with pytest.raises(DBAPIError):
            async with write(engine) as conn:
                await conn.execute(text("UPDATE job SET progress = 50 WHERE id = 'j1'"))
                # Frozen here, its lock held: another instance's update of the row goes
                # through once the server has ended the frozen one's session.
                async with asyncio.timeout(PATIENCE):
                    await other.execute("UPDATE job SET progress = 70 WHERE id = 'j1'")
        job = await store.get("j1")  # the pool replaced the ended connection
        assert job is not None and job.progress == 70
    finally:
        await other.close()
        await engine.dispose()


async def test_a_migration_waits_for_another_instances_migration_past_the_timeouts(
    empty_postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An instance starting while another migrates waits for the migration lock as long as
    that migration takes, and a migration's statements (a table rewritten, an index built on a
    big table) are not cut off: the engine's lock and statement timeouts are for everyday work,
    whose wait on the same lock does end."""
    _short_timeouts(monkeypatch, lock=0.2, statement=0.5)
    engine = create_engine(empty_postgres_url)
    other = await asyncpg.connect(_dsn(empty_postgres_url))
    try:
        await other.execute("BEGIN")
        await other.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        with pytest.raises(DBAPIError, match="lock timeout"):
            async with asyncio.timeout(PATIENCE), engine.connect() as conn:
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
                )
        migrating = asyncio.create_task(migrate(engine))
        await asyncio.sleep(1.0)  # past both timeouts
        assert not migrating.done()
        await other.execute("ROLLBACK")  # the other instance's migration ends
        applied = await asyncio.wait_for(migrating, 60)
        assert applied
        async with engine.connect() as conn:  # everyday work is bounded again
            assert (await conn.execute(text("SHOW statement_timeout"))).scalar_one() == "500ms"
    finally:
        await other.close()
        await engine.dispose()


# ---- a connection pooler that refuses startup parameters (PgBouncer, hosted poolers) --------

_SSL_REQUEST, _GSSENC_REQUEST, _PROTOCOL_3 = 80877103, 80877104, 196608
# What PgBouncer accepts in a startup packet; anything else is "unsupported startup parameter".
_ACCEPTED = {
    "user",
    "database",
    "application_name",
    "client_encoding",
    "datestyle",
    "timezone",
    "standard_conforming_strings",
}


def _error_response(message: str) -> bytes:
    fields = b"".join(
        kind + value.encode() + b"\0"
        for kind, value in ((b"S", "FATAL"), (b"V", "FATAL"), (b"C", "08P01"), (b"M", message))
    )
    body = fields + b"\0"
    return b"E" + struct.pack("!i", len(body) + 4) + body


@contextlib.asynccontextmanager
async def _refusing_pooler(host: str, port: int) -> AsyncIterator[tuple[int, list[str]]]:
    """A loopback proxy in front of PostgreSQL that, as PgBouncer does, ends a connection whose
    startup packet carries a parameter it does not know; its port, and what it refused."""
    refused: list[str] = []
    tasks: set[asyncio.Task[None]] = set()

    async def serve(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        while True:
            length, code = struct.unpack("!ii", await client_r.readexactly(8))
            if code in (_SSL_REQUEST, _GSSENC_REQUEST):
                client_w.write(b"N")
                continue
            rest = await client_r.readexactly(length - 8)
            break
        if code == _PROTOCOL_3:
            words = rest.split(b"\0")
            params = dict(zip(words[0:-2:2], words[1:-1:2], strict=True))
            unknown = sorted(key.decode() for key in params if key.decode() not in _ACCEPTED)
            if unknown:
                refused.append(unknown[0])
                client_w.write(_error_response(f"unsupported startup parameter: {unknown[0]}"))
                await client_w.drain()
                client_w.close()
                return
        server_r, server_w = await asyncio.open_connection(host, port)
        server_w.write(struct.pack("!ii", length, code) + rest)
        await asyncio.gather(pipe(client_r, server_w), pipe(server_r, client_w))

    def start(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(serve(client_r, client_w))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    server = await asyncio.start_server(start, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], refused
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_behind_a_pooler_that_refuses_startup_settings_they_are_set_after_connecting(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PgBouncer (session mode, which the leader's lock allows) ends a connection that asks for
    `lock_timeout` in its startup packet: Conjure could not connect at all. The timeouts are then
    SET once connected instead, and every later connection of the engine does so directly."""
    _short_timeouts(monkeypatch, lock=2.0, statement=30.0, idle_in_transaction=10.0)
    target = make_url(postgres_url)
    async with _refusing_pooler(target.host or "127.0.0.1", target.port or 5432) as (
        port,
        refused,
    ):
        url = target.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
        engine = create_engine(url)
        try:
            entered = asyncio.Event()
            shown: list[tuple[str, str, str]] = []

            async def show(together: int) -> None:
                async with engine.connect() as conn:
                    values = await conn.execute(
                        text(
                            "SELECT current_setting('lock_timeout'), "
                            "current_setting('statement_timeout'), "
                            "current_setting('idle_in_transaction_session_timeout')"
                        )
                    )
                    shown.append(tuple(values.one()))
                    if len(shown) == together:
                        entered.set()
                    await entered.wait()

            await show(1)  # refused, then connected without them and SET
            entered.clear()
            await asyncio.gather(show(3), show(3))  # the pooled one, and a new one
            assert shown == [("2s", "30s", "10s")] * 3
            assert len(refused) == 1  # the new connection did not ask again
        finally:
            await engine.dispose()
