"""Leadership when the leader's machine vanishes without a word (power cut, a network that
drops packets instead of refusing them): its database session is never closed, so only the
server can end it. Simulated with a loopback TCP proxy that stops forwarding but keeps both
sockets open, as a dead host's half of the connection looks to the server."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from sqlalchemy.engine import make_url

from bot import leadership
from bot.leadership import Leadership, PostgresLock, lock_for
from tests.tcp_relay import relayed_postgres

FAST = 0.05
SYNC = b"S\x00\x00\x00\x04"  # the protocol message that ends each query asyncpg sends


class BlackholeProxy:
    """Forwards TCP to `target` until `freeze()`; then drops everything, closing nothing."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.frozen = asyncio.Event()
        self.closed = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    def freeze(self) -> None:
        self.frozen.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.writers += [writer, up_writer]
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await reader.read(65536):
                if self.frozen.is_set():
                    await self.closed.wait()  # hold the socket open, forward nothing
                    return
                writer.write(data)
                await writer.drain()

    async def aclose(self) -> None:
        self.closed.set()
        await asyncio.sleep(0)
        for writer in self.writers:
            writer.close()
        if self.server is not None:
            self.server.close()


async def test_a_leader_whose_machine_vanishes_is_replaced_within_seconds(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server must end the vanished leader's session by itself (it holds the advisory
    lock): left to TCP keepalive's defaults, that takes over two hours, and for all that time
    no process runs the Discord gateway or the sweeper."""
    # Margins a loaded machine keeps: a leader's check slower than 0.3 s, or a second of its
    # silence, would end its leadership before its machine vanished (CI failed once so).
    monkeypatch.setattr(leadership, "CHECK_TIMEOUT", 1.0)
    monkeypatch.setattr(leadership, "SERVER_IDLE_TIMEOUT", 2.0)
    url = make_url(postgres_url)
    proxy = BlackholeProxy(url.host or "127.0.0.1", url.port or 5432)
    port = await proxy.start()
    via_proxy = url.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)

    one = Leadership(PostgresLock(via_proxy), retry=FAST)
    two = Leadership(PostgresLock(postgres_url), retry=FAST)
    tasks = [asyncio.create_task(one.run())]
    try:
        async with asyncio.timeout(5):
            await one.leading.wait()
        tasks.append(asyncio.create_task(two.run()))
        await asyncio.sleep(FAST * 6)
        assert not two.leading.is_set()

        proxy.freeze()  # the leader's machine is gone: nothing more reaches the server
        async with asyncio.timeout(10):
            await two.leading.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await proxy.aclose()
        await one.aclose()
        await two.aclose()


async def test_the_leaders_session_is_never_left_inside_a_transaction(postgres_url: str) -> None:
    """Read on the wire: the lock's session takes, checks and gives up the lock without a
    BEGIN. A leader that vanished between a check's BEGIN and its COMMIT left its session
    idle in a transaction, which idle_session_timeout does not end: with its kernel still
    answering (a frozen machine), no one else led (the test above failed so, now and then)."""
    async with relayed_postgres(postgres_url) as (relay, url):
        leader = Leadership(PostgresLock(url), retry=FAST)
        task = asyncio.create_task(leader.run())
        try:
            async with asyncio.timeout(5):
                await leader.leading.wait()
            queries = relay.sent.count(SYNC)
            async with asyncio.timeout(5):  # three checks more
                while relay.sent.count(SYNC) < queries + 3:
                    await asyncio.sleep(FAST)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await leader.aclose()
        assert b"pg_try_advisory_lock" in relay.sent
        assert b"BEGIN" not in relay.sent and b"COMMIT" not in relay.sent


async def test_a_duty_that_fails_once_runs_again_while_this_process_leads(
    database_url: str,
) -> None:
    """The leader's recovery fails on a database blip (a leader often takes over just as the
    database comes back): the sweeper it leads into must run again, not stay dead for as long
    as this process holds the lock, which no other process can then take over."""
    runs: list[str] = []

    async def sweeper() -> None:
        runs.append("started")
        if len(runs) == 1:
            raise ConnectionResetError("the database went away during recovery")
        await asyncio.Event().wait()

    leader = Leadership(lock_for(database_url), retry=FAST)
    leader.add_duty("recovery and the sweeper", sweeper)
    task = asyncio.create_task(leader.run())
    try:
        async with asyncio.timeout(3):
            while len(runs) < 2:
                await asyncio.sleep(0.01)
        assert leader.terms == 1  # the same term: the lock was held throughout
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await leader.aclose()
