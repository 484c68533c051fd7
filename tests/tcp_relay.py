"""A loopback TCP relay for the tests: bytes piped both ways, and one in front of PostgreSQL
that goes down and comes back as a restarting server does."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from tests.harness import Conjure, running_conjure


async def pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, copy: bytearray | None = None
) -> None:
    """Copy `reader` into `writer` until either end closes (and into `copy`, when given)."""
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            if copy is not None:
                copy += data
            writer.write(data)
            await writer.drain()
    writer.close()


class PostgresRelay:
    """A loopback TCP relay in front of PostgreSQL that can go down as the server does in a
    restart: its port refuses connections (asyncpg raises ConnectionRefusedError, an OSError,
    which SQLAlchemy does not wrap) until it comes back on the same port. What the clients sent
    is in `sent`."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self.sent = bytearray()
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def up(self) -> None:
        async def serve(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
            server_r, server_w = await asyncio.open_connection(*self.target)
            self._writers |= {client_w, server_w}
            await asyncio.gather(pipe(client_r, server_w, self.sent), pipe(server_r, client_w))

        self._server = await asyncio.start_server(serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    def down(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()


@contextlib.asynccontextmanager
async def relayed_postgres(url: str) -> AsyncIterator[tuple[PostgresRelay, str]]:
    """A relay in front of the PostgreSQL of `url`, up, and the URL that goes through it."""
    target = make_url(url)
    relay = PostgresRelay(target.host or "127.0.0.1", target.port or 5432)
    await relay.up()
    try:
        yield (
            relay,
            target.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False),
        )
    finally:
        relay.down()


@contextlib.asynccontextmanager
async def console_behind_a_relay(
    sandbox: Any, postgres_url: str, tmp_path: Path, **settings: Any
) -> AsyncIterator[tuple[PostgresRelay, Conjure]]:
    """Conjure with its console, on the PostgreSQL of `postgres_url` through a relay that can
    go down as a restarting server does."""
    async with (
        relayed_postgres(postgres_url) as (relay, proxied),
        running_conjure(sandbox, proxied, tmp_path / "out", **settings) as conjure,
    ):
        yield relay, conjure
