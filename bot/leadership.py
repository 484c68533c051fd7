"""One leader among every Conjure process sharing a database: it alone runs the singletons.

Some work must happen once however many workers and instances run: the Discord gateway
connection (each connection would receive the same interactions), the sweeper and start-up
recovery. `Leadership` runs them in whichever process holds a lock, and makes the others try
again every few seconds, so when the holder dies another takes over within seconds:

- PostgreSQL: a session-level advisory lock (`pg_try_advisory_lock`) held on a connection of
  its own. The server releases it when that session ends (the process died, or the network
  did), and the holder checks its connection every few seconds: a lost connection stops the
  singletons before anyone else can have taken the lock for long. A holder whose machine
  vanishes closes nothing, so the session is told to end itself after SERVER_IDLE_TIMEOUT of
  silence (idle_session_timeout, and TCP keepalives before PostgreSQL 14): left to the
  operating system's keepalive defaults, nobody would lead for over two hours.
- SQLite: `flock` on a file beside the database; the kernel releases it when the process dies.
  (SQLite serves one machine, so that is every process that can share the database.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from storage.errors import is_outage
from storage.urls import normalize_database_url, sqlite_file

try:
    import fcntl
except ImportError:  # Windows: no flock, and no `serve --workers` either (no fd passing)
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

# The advisory lock's key: any constant 64-bit number; advisory locks are per database, so two
# Conjures on two databases of one server do not share it.
LOCK_KEY = 0x636F6E6A757265  # "conjure"
RETRY_SECONDS = 2.0  # how often a non-holder tries again, and the holder checks its lock
CHECK_TIMEOUT = 5.0  # a check that takes longer than this counts as a lost connection
# Seconds of silence after which the server ends a lock session itself (a vanished holder's);
# well past RETRY_SECONDS, since holders and contenders alike query that often.
SERVER_IDLE_TIMEOUT = 15.0
IDLE_SESSION_TIMEOUT_SINCE = 140000  # server_version_num of PostgreSQL 14
DUTY_MAX_PAUSE = 60.0  # seconds at most between restarts of a duty that keeps failing

Duty = Callable[[], Awaitable[None]]


class Lock(Protocol):
    async def acquire(self) -> bool:
        """Take the lock if it is free; False when another process holds it."""

    async def still_held(self) -> bool:
        """Whether the lock is still this process's (False once its connection is lost)."""

    async def release(self) -> None:
        """Give it up (idempotent)."""

    async def aclose(self) -> None:
        """Release, and close what the lock holds open."""


class PostgresLock:
    """`pg_try_advisory_lock` on a dedicated connection: held as long as that session lives.

    A non-holder keeps its connection between attempts, so trying again is one query. The
    connection is in autocommit: no statement of it opens a transaction. In one, a holder whose
    machine vanished (or froze) between a check's BEGIN and its COMMIT left its session idle
    in a transaction, which `idle_session_timeout` does not end: no one else led until its TCP
    connection was found dead, or never, while its kernel still answered."""

    def __init__(self, url: str, key: int = LOCK_KEY) -> None:
        self._engine: AsyncEngine = create_async_engine(
            url, poolclass=NullPool, isolation_level="AUTOCOMMIT"
        )
        self._key = key
        self._conn: AsyncConnection | None = None
        self._held = False
        self._lost = False  # a check failed: the connection is dropped at release

    async def acquire(self) -> bool:
        try:
            if self._conn is None:
                self._conn = await self._engine.connect()
                await _end_when_silent(self._conn)
            query = text("SELECT pg_try_advisory_lock(:key)")
            self._held = bool((await self._conn.execute(query, {"key": self._key})).scalar())
        except BaseException:
            await self._drop()
            raise
        return self._held

    async def still_held(self) -> bool:
        if not self._held or self._conn is None:
            return False
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                await self._conn.execute(text("SELECT 1"))
        except Exception:
            log.warning("the leadership lock's database connection was lost")
            # Dropped by `release`, once the leader's duties have stopped: dropping it here
            # would end the session (and free the lock for the next holder) while they run.
            self._lost = True
            return False
        return True

    async def release(self) -> None:
        if self._lost:
            self._lost = False
            await self._drop()  # no unlock: the connection did not answer
            return
        if self._held and self._conn is not None:
            # Unlocked first, so the next holder can take it at its next try: the lock would
            # also go with the session, but only once the server has finished ending it, which
            # a busy server may take its time over.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CHECK_TIMEOUT):
                    query = text("SELECT pg_advisory_unlock(:key)")
                    await self._conn.execute(query, {"key": self._key})
        if self._held:
            await self._drop()  # ending the session releases its advisory lock in any case

    async def aclose(self) -> None:
        await self._drop()
        await self._engine.dispose()

    async def _drop(self) -> None:
        conn, self._conn, self._held = self._conn, None, False
        if conn is not None:
            await _close(conn)


class FileLock:
    """`flock` on a lock file: the kernel drops it with the process, however that ends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    async def acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # who leads, for an operator (and tests)
        self._fd = fd
        return True

    async def still_held(self) -> bool:
        return self._fd is not None

    async def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the only descriptor releases the flock

    async def aclose(self) -> None:
        await self.release()


class AlwaysHeld:
    """For a database no other process can open (in-memory SQLite): this process leads."""

    async def acquire(self) -> bool:
        return True

    async def still_held(self) -> bool:
        return True

    async def release(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


def lock_file(database_url: str) -> Path | None:
    """The lock file beside a SQLite database (None for in-memory or another backend)."""
    database = sqlite_file(database_url)
    return None if database is None else Path(f"{database}.leader.lock")


def lock_for(database_url: str) -> Lock:
    """The lock every process on this database contends for."""
    url = normalize_database_url(database_url)
    if make_url(url).get_backend_name() == "postgresql":
        return PostgresLock(url)
    path = lock_file(url)
    return FileLock(path) if path is not None and fcntl is not None else AlwaysHeld()


class Leadership:
    """Runs the registered duties while this process holds `lock`; stops them when it does not.

    Duties are coroutine functions that run until cancelled (the sweeper, the gateway). They
    are registered before `run` starts, and started again each time leadership is regained.
    """

    def __init__(self, lock: Lock, retry: float = RETRY_SECONDS) -> None:
        self.lock = lock
        self.retry = retry
        self.duties: dict[str, Duty] = {}
        self.leading = asyncio.Event()
        self.terms = 0  # how many times this process has taken the lead

    def add_duty(self, name: str, duty: Duty) -> None:
        self.duties[name] = duty

    async def run(self) -> None:
        """Contend for the lock forever; lead while it is held. Cancel to stop (and release)."""
        failing = False
        try:
            while True:
                try:
                    acquired = await self.lock.acquire()
                    failing = False
                except Exception as exc:
                    level = logging.DEBUG if failing else logging.WARNING  # once per outage
                    log.log(level, "could not contend for leadership (%s); trying again", exc)
                    acquired, failing = False, True
                if acquired:
                    await self._lead()
                await asyncio.sleep(self.retry)
        finally:
            self.leading.clear()
            with contextlib.suppress(Exception):
                await asyncio.shield(self.lock.release())

    async def _lead(self) -> None:
        """Run every duty until the lock is lost (or this task is cancelled)."""
        self.terms += 1
        self.leading.set()
        log.info("leading: running %s (pid %d)", ", ".join(self.duties) or "nothing", os.getpid())
        tasks = [
            asyncio.create_task(_guarded(name, duty, self.retry), name=f"leader:{name}")
            for name, duty in self.duties.items()
        ]
        try:
            while await self.lock.still_held():  # noqa: ASYNC110 (a lock has no event)
                await asyncio.sleep(self.retry)
            log.warning("lost leadership: stopped %s", ", ".join(self.duties) or "nothing")
        finally:
            self.leading.clear()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.lock.release()

    async def aclose(self) -> None:
        await self.lock.aclose()


async def _guarded(name: str, duty: Duty, pause: float) -> None:
    """Run a duty; one that fails is logged and started again after a pause (doubling, at most
    DUTY_MAX_PAUSE): left stopped, it would stay stopped for as long as this process leads,
    since no other process can take the lead from a holder that is alive. One that returns
    has ended (its platform closed) and is not started again."""
    wait = pause
    while True:
        started = time.monotonic()
        try:
            await duty()
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if time.monotonic() - started > DUTY_MAX_PAUSE:
                wait = pause  # it had run a good while: a new failure, not the same one again
            if is_outage(exc):  # a restart, a failover: not a bug, no traceback
                log.warning(
                    "the leader's %s stopped: the database did not answer (%s); starting it "
                    "again in %gs",
                    name,
                    type(exc).__name__,
                    wait,
                )
            else:
                log.exception("the leader's %s stopped; starting it again in %gs", name, wait)
        await asyncio.sleep(wait)
        wait = min(DUTY_MAX_PAUSE, max(wait, 0.1) * 2)


async def _end_when_silent(conn: AsyncConnection) -> None:
    """Have the server end this session after SERVER_IDLE_TIMEOUT without a query, so the lock
    of a holder that vanished without closing its connection is freed within seconds."""
    seconds = max(1, round(SERVER_IDLE_TIMEOUT))
    settings = {  # TCP keepalives: probes from a third of the timeout, three of them
        "tcp_keepalives_idle": max(1, seconds // 3),
        "tcp_keepalives_interval": max(1, seconds // 6),
        "tcp_keepalives_count": 3,
    }
    version = int((await conn.execute(text("SHOW server_version_num"))).scalar_one())
    if version >= IDLE_SESSION_TIMEOUT_SINCE:
        settings["idle_session_timeout"] = round(SERVER_IDLE_TIMEOUT * 1000)  # milliseconds
    for name, value in settings.items():
        query = text("SELECT set_config(:name, :value, false)")
        await conn.execute(query, {"name": name, "value": str(value)})


async def _close(conn: AsyncConnection) -> None:
    """Close, or drop when the server cannot be reached (its session, and lock, end anyway)."""
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await conn.close()
    except Exception:
        with contextlib.suppress(Exception):
            await conn.invalidate()
