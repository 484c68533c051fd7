"""Pytest plugin: a Replicate sandbox on loopback, and a webhook receiver to point it at.

Registered from tests/conftest.py, so any test can ask for `sandbox_server` (fast: speed 0.02,
images 128 pixels on their long side: drawing 512-pixel ones was a twentieth of the suite's CPU)
or `webhook_receiver` (records signed webhooks; can be told to answer errors first).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # imported where used: pytest-xdist's controller loads this plugin too
    from starlette.requests import Request
    from starlette.responses import Response

    from bot.jobs import JobService
    from bot.sandbox import Sandbox


SMALL_IMAGES = 128  # pixels on an image's long side, in the sandbox the tests share


@dataclass
class SandboxServer:
    """A running sandbox: base URL (no /v1), its token and secret, and its in-process state."""

    url: str
    token: str
    webhook_secret: str
    sandbox: Sandbox


@pytest.fixture
async def sandbox_server() -> AsyncIterator[SandboxServer]:
    """A sandbox served on an ephemeral loopback port at speed 0.02, drawing small images."""
    from bot.sandbox import SandboxConfig, create_sandbox_app
    from bot.serving import serve_app

    app = create_sandbox_app(SandboxConfig(speed=0.02, image_side=SMALL_IMAGES))
    sandbox: Sandbox = app.state.sandbox
    async with serve_app(app) as url:
        yield SandboxServer(url, sandbox.config.api_token, sandbox.config.secret, sandbox)


@dataclass
class ReceivedWebhook:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class WebhookReceiver:
    """A loopback endpoint that records webhooks; `statuses` are answered first, then 200."""

    url: str  # base URL; post webhooks to f"{url}/hook" (any path works)
    received: list[ReceivedWebhook] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
async def webhook_receiver() -> AsyncIterator[WebhookReceiver]:
    """A webhook receiver served on an ephemeral loopback port."""
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    from bot.serving import serve_app

    receiver = WebhookReceiver(url="")

    async def receive(request: Request) -> Response:
        receiver.received.append(
            ReceivedWebhook(request.url.path, dict(request.headers), await request.body())
        )
        receiver.arrived.set()
        status = receiver.statuses.pop(0) if receiver.statuses else 200
        return Response(status_code=status)

    app = Starlette(routes=[Route("/{path:path}", receive, methods=["POST"])])
    async with serve_app(app) as url:
        receiver.url = url
        yield receiver


def lose_the_next_create(server: SandboxServer) -> None:
    """The next create runs, but its answer comes too late, its `start` webhook is lost and the
    list cannot be read (500s): an impatient caller gives the job up, and only the prediction's
    later webhooks show that it ran."""
    from bot.sandbox import HttpFault

    faults = server.sandbox.faults
    faults.drop_webhooks = 1
    faults.slow_start = 1.0
    faults.http.append(HttpFault(method="POST", path_prefix="/v1/models/", delay=1.0))
    faults.http.append(HttpFault(status=500, count=10, method="GET", path_prefix="/v1/predictions"))


@contextlib.asynccontextmanager
async def impatient_replicate(
    service: JobService, server: SandboxServer, timeout: float = 0.3, max_attempts: int | None = 1
) -> AsyncIterator[None]:
    """For the block, `service` waits `timeout` seconds for an answer from Replicate and tries
    `max_attempts` times (None: as often as the client does by default)."""
    from bot.replicate.client import ReplicateClient

    options = {} if max_attempts is None else {"max_attempts": max_attempts}
    impatient = ReplicateClient(server.url, server.token, timeout=timeout, **options)
    patient, service.replicate = service.replicate, impatient
    try:
        yield
    finally:
        service.replicate = patient
        await impatient.aclose()
