"""Signed webhook delivery the way Replicate does it, every attempt recorded for inspection.

One `PredictionWebhooks` per prediction decides what to send (the events filter, throttling of
`logs`/`output`), sends in order (each send waits for the previous one), and retries only the
terminal `completed` webhook, with exponential backoff, keeping its webhook-id.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx
from standardwebhooks import Webhook

from bot.sandbox.config import SandboxConfig
from bot.sandbox.faults import Faults
from bot.sandbox.predictions import new_webhook_id

MAX_ATTEMPTS = 5
FIRST_BACKOFF = 4.0  # seconds x speed, doubling: 4+8+16+32, the last retry ~1 min after the end
THROTTLE_SECONDS = 0.5  # x speed: at most one logs (and one output) webhook per interval
USER_AGENT = "Replicate-Sandbox-Webhook/1.0"


@dataclass
class WebhookDelivery:
    """One delivery attempt, in the order attempted."""

    url: str
    event: str
    status: str
    webhook_id: str
    attempt: int
    headers: dict[str, str]
    body: bytes
    response_status: int | None
    error: str | None
    dropped: bool


def encode_body(prediction: dict[str, Any]) -> bytes:
    """The exact bytes sent (and signed) for a prediction."""
    return json.dumps(prediction, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def signed_headers(secret: str, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Standard Webhooks headers for one attempt."""
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    signature = Webhook(secret).sign(webhook_id, moment, body.decode("utf-8"))
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }


class WebhookHost(Protocol):
    """What the webhooks need of the sandbox (bot.sandbox.state.Sandbox)."""

    config: SandboxConfig
    faults: Faults
    sending: asyncio.Semaphore
    webhook_deliveries: list[WebhookDelivery]
    webhooks_queued: int

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]: ...

    def http(self) -> httpx.AsyncClient: ...


class PredictionWebhooks:
    """The webhooks of one prediction: which to send, when, and in which order."""

    def __init__(
        self, sandbox: WebhookHost, prediction: dict[str, Any], url: str, events: list[str]
    ) -> None:
        self._sandbox = sandbox
        self._prediction = prediction
        self._url = url
        self._events = frozenset(events)
        self._interval = THROTTLE_SECONDS * sandbox.config.speed
        self._last_sent: dict[str, float] = {}
        self._timers: dict[str, asyncio.Task[None]] = {}
        self._unsent: set[str] = set()  # changed since their last send, held back
        self._tail: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        """The prediction was created."""
        self._send("start", retry=False)

    def changed(self, event: str) -> None:
        """Logs or output changed: send now, or once the throttle interval has passed."""
        if self._closed or event not in self._events:
            return
        now = asyncio.get_running_loop().time()
        last = self._last_sent.get(event)
        if last is None or now - last >= self._interval:
            self._send(event, retry=False)
            return
        self._unsent.add(event)
        if event not in self._timers:
            self._timers[event] = self._sandbox.spawn(self._send_later(event))

    def completed(self) -> None:
        """The prediction is terminal: send the (retried) completed webhook, nothing after."""
        if self._closed:
            return
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        if "logs" not in self._last_sent:
            self._send("logs", retry=False)  # every prediction gets at least one logs webhook
        self._send("completed", retry=True)
        self._closed = True

    async def _send_later(self, event: str) -> None:
        """Send what was held back once the interval since the last send is over. On a busy
        loop this may run late, after a later change was sent at once: then it waits out the
        new interval, and sends only if something changed since."""
        loop = asyncio.get_running_loop()
        # A deadline that moves with each send, not a condition to poll (hence no Event).
        while (wait := self._last_sent[event] + self._interval - loop.time()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(wait)
        self._timers.pop(event, None)
        if not self._closed and event in self._unsent:
            self._send(event, retry=False)

    def _send(self, event: str, retry: bool) -> None:
        if event not in self._events:
            return
        self._unsent.discard(event)
        self._sandbox.webhooks_queued += 1
        self._last_sent[event] = asyncio.get_running_loop().time()
        body = encode_body(self._prediction)
        status = self._prediction["status"]
        previous = self._tail
        self._tail = self._sandbox.spawn(
            self._deliver(previous, event, status, new_webhook_id(), body, retry)
        )

    async def _deliver(
        self,
        previous: asyncio.Task[None] | None,
        event: str,
        status: str,
        webhook_id: str,
        body: bytes,
        retry: bool,
    ) -> None:
        if previous is not None:
            await asyncio.wait([previous])  # keep order; never raises if it was cancelled
        attempts = MAX_ATTEMPTS if retry else 1
        for attempt in range(1, attempts + 1):
            async with self._sandbox.sending:  # signed once its turn comes, so never stale
                delivered = await self._attempt(event, status, webhook_id, body, attempt)
            if delivered:
                return
            if attempt < attempts:
                await asyncio.sleep(FIRST_BACKOFF * 2 ** (attempt - 1) * self._sandbox.config.speed)

    async def _attempt(
        self, event: str, status: str, webhook_id: str, body: bytes, attempt: int
    ) -> bool:
        headers = signed_headers(self._sandbox.config.secret, webhook_id, int(time.time()), body)

        def record(response_status: int | None, error: str | None, dropped: bool) -> None:
            self._sandbox.webhook_deliveries.append(
                WebhookDelivery(
                    self._url,
                    event,
                    status,
                    webhook_id,
                    attempt,
                    headers,
                    body,
                    response_status,
                    error,
                    dropped,
                )
            )

        faults = self._sandbox.faults
        if faults.drop_webhooks > 0:
            faults.drop_webhooks -= 1
            record(None, "dropped by fault injection", True)
            return False
        try:
            response = await self._sandbox.http().post(self._url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            record(None, f"{type(exc).__name__}: {exc}", False)
            return False
        record(response.status_code, None, False)
        return 200 <= response.status_code < 300
