"""The leadership lock (bot.leadership): one holder at a time, on PostgreSQL and on SQLite, and
the singletons move to another contender within moments of the holder's end, however it ends."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from bot import leadership
from bot.leadership import FileLock, Leadership, PostgresLock, lock_file, lock_for

FAST = 0.05  # seconds between tries, in these tests


async def _until(condition, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


class Contender:
    """A Leadership with one duty that records when it runs and stops."""

    def __init__(
        self, lock: PostgresLock | FileLock, name: str, log: list[str], stops_in: float = 0.0
    ) -> None:
        self.leadership = Leadership(lock, retry=FAST)
        self.running = False

        async def duty() -> None:
            self.running = True
            log.append(f"{name} started")
            try:
                await asyncio.Event().wait()
            finally:
                if stops_in:  # a duty that takes a moment to stop (a gateway closing)
                    await asyncio.sleep(stops_in)
                self.running = False
                log.append(f"{name} stopped")

        self.leadership.add_duty("sweeper", duty)
        self.task = asyncio.create_task(self.leadership.run())

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.leadership.aclose()


async def test_postgres_one_holder_and_a_broken_connection_hands_over(postgres_url: str) -> None:
    log: list[str] = []
    one = Contender(PostgresLock(postgres_url), "one", log)
    await _until(lambda: one.running)
    two = Contender(PostgresLock(postgres_url), "two", log)
    try:
        await asyncio.sleep(FAST * 6)  # two tries several times, and is refused
        assert not two.running and log == ["one started"]

        # The holder's session ends under it (a network cut, a restarted server):
        await _terminate_lock_holder(postgres_url)
        await _until(lambda: two.running and not one.running)
        assert log[:1] == ["one started"] and set(log[1:]) == {"one stopped", "two started"}
        await asyncio.sleep(FAST * 6)
        assert not one.running  # one tries again and is refused while two holds it
    finally:
        await one.stop()
        await two.stop()


async def test_postgres_a_holder_that_stops_releases_at_once(postgres_url: str) -> None:
    log: list[str] = []
    one = Contender(PostgresLock(postgres_url), "one", log)
    await _until(lambda: one.running)
    two = Contender(PostgresLock(postgres_url), "two", log)
    try:
        await one.stop()
        await _until(lambda: two.running)  # at its next try, not when a lease runs out
    finally:
        await two.stop()
    assert log == ["one started", "one stopped", "two started", "two stopped"]


async def test_postgres_a_holder_whose_server_hangs_lets_go_and_hands_over(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The unlock at release gets no answer (the holder's server process is paused): release
    gives up after the check's timeout instead of hanging the shutdown, drops the connection,
    and the lock goes with the session once the server ends it. (SQLAlchemy then tries a
    graceful close of the dropped connection for up to 2 s, shielded from our timeout.)"""
    monkeypatch.setattr(leadership, "CHECK_TIMEOUT", 0.3)
    one, two = PostgresLock(postgres_url), PostgresLock(postgres_url)
    assert await one.acquire()
    backend = await _lock_holder_pid(postgres_url)
    try:
        if not _is_local_postgres(backend):  # never signal a pid of a server elsewhere
            raise PermissionError
        os.kill(backend, signal.SIGSTOP)
    except PermissionError:
        await one.aclose()
        await two.aclose()
        pytest.skip("the database server's process is not one this test may pause")
    try:
        started = time.monotonic()
        async with asyncio.timeout(10):  # a release that waited on the server would hang here
            await one.release()  # no exception, and no waiting on the server
        assert time.monotonic() - started < leadership.CHECK_TIMEOUT + 2 + 1
        assert not await one.still_held()
        assert not await two.acquire()  # the paused session still holds it
    finally:
        os.kill(backend, signal.SIGCONT)
    try:
        async with asyncio.timeout(5):
            while not await two.acquire():
                await asyncio.sleep(FAST)
    finally:
        await two.release()
        await one.aclose()
        await two.aclose()


async def test_postgres_a_killed_holder_process_hands_over(postgres_url: str) -> None:
    """kill -9 of the holding process: its session ends, and the lock with it."""
    url = postgres_url.replace("+asyncpg", "")
    holder = await _child(
        f"""
        import asyncio, asyncpg
        async def main():
            conn = await asyncpg.connect({url!r})
            assert await conn.fetchval("SELECT pg_try_advisory_lock($1)", {_key()})
            print("held", flush=True)
            await asyncio.sleep(60)
        asyncio.run(main())
        """
    )
    log: list[str] = []
    contender = Contender(PostgresLock(postgres_url), "two", log)
    try:
        await asyncio.sleep(FAST * 4)
        assert not contender.running
        holder.send_signal(signal.SIGKILL)
        await holder.wait()
        await _until(lambda: contender.running)
    finally:
        await contender.stop()


async def test_sqlite_flock_beside_the_database(tmp_path: Path, sqlite_url: str) -> None:
    path = lock_file(sqlite_url)
    assert path is not None and path.parent == tmp_path and path.name == "conjure.db.leader.lock"
    one, two = lock_for(sqlite_url), lock_for(sqlite_url)
    assert isinstance(one, FileLock) and isinstance(two, FileLock)
    assert await one.acquire()
    assert path.read_text() == f"{os.getpid()}\n"  # who leads, for an operator
    assert not await two.acquire()
    await one.release()
    assert await two.acquire()
    await two.aclose()


async def test_sqlite_a_killed_holder_process_hands_over(tmp_path: Path, sqlite_url: str) -> None:
    path = lock_file(sqlite_url)
    holder = await _child(
        f"""
        import fcntl, os, time
        fd = os.open({str(path)!r}, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        print("held", flush=True)
        time.sleep(60)
        """
    )
    log: list[str] = []
    contender = Contender(FileLock(path), "two", log)  # type: ignore[arg-type]
    try:
        await asyncio.sleep(FAST * 4)
        assert not contender.running
        holder.send_signal(signal.SIGKILL)
        await holder.wait()
        await _until(lambda: contender.running, timeout=2)
    finally:
        await contender.stop()
    assert log == ["two started", "two stopped"]


def _key() -> int:
    from bot.leadership import LOCK_KEY

    return LOCK_KEY


async def _child(code: str) -> asyncio.subprocess.Process:
    """A Python process running `code`, once it has printed that it holds the lock."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", textwrap.dedent(code), stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    assert await asyncio.wait_for(process.stdout.readline(), timeout=10) == b"held\n"
    return process


def _is_local_postgres(pid: int) -> bool:
    """Whether `pid` is a PostgreSQL server process on this machine."""
    try:
        return b"postgres" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


async def _lock_holder_pid(url: str) -> int:
    """The server process of the session holding the leadership lock in this database."""
    conn = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        return int(
            await conn.fetchval(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
        )
    finally:
        await conn.close()


async def _terminate_lock_holder(url: str) -> None:
    conn = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        ended = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_locks "
            "WHERE locktype = 'advisory' AND granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
    finally:
        await conn.close()
    assert ended == 1


async def test_postgres_a_leader_whose_check_fails_stops_its_duties_before_letting_go(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed check (the connection errs) ends the term: the duties are stopped, and only
    then is the session dropped, which frees the lock for the next holder. Dropping it at
    the check let the next leader start while this one's duties (a gateway taking a moment
    to close) still ran."""
    log: list[str] = []
    one = Contender(PostgresLock(postgres_url), "one", log, stops_in=0.3)
    await _until(lambda: one.running)
    failing = one.leadership.lock._conn  # type: ignore[union-attr]
    original = AsyncConnection.execute

    async def execute(self: AsyncConnection, *args: Any, **kwargs: Any) -> Any:
        if self is failing:
            raise OperationalError("SELECT 1", None, ConnectionResetError("reset by peer"))
        return await original(self, *args, **kwargs)

    two = Contender(PostgresLock(postgres_url), "two", log)
    try:
        monkeypatch.setattr(AsyncConnection, "execute", execute)
        await _until(lambda: two.running)
    finally:
        monkeypatch.undo()
        await one.stop()
        await two.stop()
    assert log[:3] == ["one started", "one stopped", "two started"]
