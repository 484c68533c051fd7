"""The Slack Web API session (adapters.slack.lifecycle.web_api_session): connections are reused,
and an idle one is dropped before a server's own keep-alive could close it under a request."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from adapters.slack.lifecycle import KEEPALIVE, web_api_session


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, list[int]]]:
    """A loopback server that notes the client port of each request (one per connection)."""
    ports: list[int] = []

    async def answer(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        ports.append(peer[1] if peer else -1)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/api/auth.test", answer)
    runner = web.AppRunner(app, keepalive_timeout=60)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/api/auth.test", ports
    finally:
        await runner.cleanup()


async def _two_calls(session: aiohttp.ClientSession, url: str, idle: float) -> None:
    async with session:
        for _ in range(2):
            async with session.post(url) as response:
                assert (await response.json()) == {"ok": True}
            await asyncio.sleep(idle)


async def test_an_idle_connection_is_reused_within_the_keepalive_and_dropped_after(
    server: tuple[str, list[int]],
) -> None:
    url, ports = server
    await _two_calls(web_api_session(keepalive=5.0), url, idle=0.3)
    assert len(set(ports)) == 1  # kept alive between calls
    ports.clear()
    await _two_calls(web_api_session(keepalive=0.1), url, idle=0.3)
    assert len(set(ports)) == 2  # dropped when idle past it: a new connection
    assert KEEPALIVE < 5  # below uvicorn's 5 s, the keep-alive of the servers it talks to here
