"""The sandbox's in-process state and the background tasks it owns.

Every background coroutine (a running prediction, a webhook send or retry) is spawned through
`Sandbox.spawn`, so `wait_idle` can wait for all of it and `aclose` can cancel all of it on
lifespan shutdown, leaving no pending task behind.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import httpx

from bot.http_transport import http_client
from bot.sandbox.config import SandboxConfig
from bot.sandbox.faults import Faults
from bot.sandbox.models import FakeModel
from bot.sandbox.streams import EventLog
from bot.sandbox.uploads import Uploads
from bot.sandbox.webhooks import PredictionWebhooks, WebhookDelivery

Files = dict[str, tuple[bytes, str]]
logger = logging.getLogger(__name__)

WEBHOOKS_AT_ONCE = 64  # below httpx's default pool of 100 connections


@dataclass
class Run:
    """What the sandbox keeps about one prediction besides its public object."""

    prediction: dict[str, Any]
    model: FakeModel
    inputs: dict[str, Any]  # validated, defaults filled in (the object echoes the raw input)
    base_url: str
    fail_error: str | None
    created: float  # event-loop clock
    started: float | None = None
    deadline: float | None = None  # event-loop clock: Cancel-After stops the prediction here
    time_factor: float = 1.0  # its steps take this many times their usual length (a fault)
    run_seconds: float = 0.0  # > 0: its steps end at started + run_seconds (a fault)
    hooks: PredictionWebhooks | None = None
    task: asyncio.Task[None] | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    files: Files = field(default_factory=dict)
    stream: EventLog | None = None  # a text model's server-sent events (urls.stream)


class Sandbox:
    """Predictions, files, faults and webhook records of one sandbox (`app.state.sandbox`)."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        self.faults = Faults()
        self.predictions: dict[str, dict[str, Any]] = {}
        self.webhook_deliveries: list[WebhookDelivery] = []
        # Webhooks queued for sending (each counted once, however many attempts it takes): a
        # prediction sends only the events its filter asks for, so an observer cannot tell
        # from the predictions alone how many deliveries to wait for.
        self.webhooks_queued = 0
        self.create_count = 0
        self.runs: dict[str, Run] = {}
        self.uploads = Uploads()  # the Files API's files
        self._tasks: set[asyncio.Task[Any]] = set()
        self._http: httpx.AsyncClient | None = None
        # Webhooks in flight at once. Beyond the client's pool, httpx queues requests in a list
        # it rescans for every request, and with thousands waiting (a burst at speed 0) that
        # scan took all the CPU, pool timeouts set off retries, and the sandbox never caught
        # up. Waiting here instead costs nothing per request.
        self.sending = asyncio.Semaphore(WEBHOOKS_AT_ONCE)

    def add(self, run: Run) -> None:
        """Register a newly created prediction."""
        prediction_id = run.prediction["id"]
        self.runs[prediction_id] = run
        self.predictions[prediction_id] = run.prediction
        self.create_count += 1

    def file(self, prediction_id: str, filename: str) -> tuple[bytes, str] | None:
        """An output file's bytes and content type."""
        run = self.runs.get(prediction_id)
        return None if run is None else run.files.get(filename)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run `coro` as a task this sandbox owns (awaited by wait_idle, cancelled by aclose)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_failure)
        return task

    def http(self) -> httpx.AsyncClient:
        """The client webhooks are sent with (redirects are not followed, like Replicate)."""
        if self._http is None:
            # On aiohttp (bot.http_transport): a burst's webhooks through httpx's own transport
            # were a third of the sandbox's CPU.
            self._http = http_client(httpx.Timeout(10.0), follow_redirects=False, trust_env=False)
        return self._http

    async def wait_idle(self, timeout: float = 10) -> None:
        """Until no prediction runs and no webhook (retries included) is pending."""
        async with asyncio.timeout(timeout):
            while self._tasks:
                await asyncio.wait(set(self._tasks))

    async def aclose(self) -> None:
        """Cancel all background work and close the webhook client."""
        while self._tasks:
            tasks = set(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()
            self._http = None


def _log_failure(task: asyncio.Task[Any]) -> None:
    """Report a background task's crash (and mark its exception retrieved)."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        logger.error("sandbox background task failed", exc_info=exc)
