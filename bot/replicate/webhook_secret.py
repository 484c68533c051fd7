"""Replicate's webhook signing secret: kept, refreshed when rotated, never fetched for junk.

Configured (CONJURE_WEBHOOK_SECRET): used as is, never fetched. Otherwise fetched from
`GET /v1/webhooks/default/secret` when the first webhook needs it (the client retries with
backoff), and again at most once a `REFETCH_INTERVAL`: while it cannot be had (webhooks are
answered 503 meanwhile, without a call to Replicate each), and after a signature that does not
match (the account's secret may have been rotated; the new one then works without a restart).
Anyone can send a webhook with a bad signature, so that is the most they can make Conjure do.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from bot.replicate.errors import ReplicateError
from bot.replicate.webhooks import WebhookVerifier

__all__ = ["REFETCH_INTERVAL", "WebhookSecretUnavailable", "WebhookSecrets"]

log = logging.getLogger(__name__)

REFETCH_INTERVAL = 60.0  # seconds between two calls to Replicate for the secret, at most


class WebhookSecretUnavailable(Exception):
    """No secret yet, and fetching one failed (or may not be tried again yet)."""


class WebhookSecrets:
    """The verifier for the current secret, fetched at most once every `interval` seconds."""

    def __init__(
        self,
        fetch: Callable[[], Awaitable[str]],
        *,
        configured: str | None = None,
        interval: float = REFETCH_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch: Callable[[], Awaitable[str]] | None = None if configured else fetch
        self._secret = configured
        self._verifier = WebhookVerifier(configured) if configured else None
        self.interval = interval
        self._clock = clock
        self._attempted_at: float | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0  # calls made to Replicate for the secret

    def __repr__(self) -> str:
        return f"WebhookSecrets(configured={self._fetch is None}, fetches={self.fetches})"

    async def verifier(self) -> WebhookVerifier:
        """The current secret's verifier; raises WebhookSecretUnavailable when there is none."""
        if self._verifier is not None:
            return self._verifier
        async with self._lock:
            if self._verifier is None:
                await self._fetch_if_due()
            if self._verifier is None:
                raise WebhookSecretUnavailable("Replicate's webhook secret could not be fetched")
            return self._verifier

    async def refreshed(self) -> WebhookVerifier | None:
        """After a signature mismatch: the verifier of a newer secret, when one may be fetched
        now and differs from the one in use; else None (the webhook is then refused)."""
        if self._fetch is None:
            return None
        before = self._secret
        async with self._lock:
            await self._fetch_if_due()
            return self._verifier if self._secret != before else None

    async def _fetch_if_due(self) -> None:
        assert self._fetch is not None
        now = self._clock()
        if self._attempted_at is not None and now - self._attempted_at < self.interval:
            return
        self._attempted_at = now
        self.fetches += 1
        try:
            secret = await self._fetch()
            verifier = WebhookVerifier(secret)
        except (ReplicateError, ValueError) as exc:  # neither ever holds the token or the secret
            # Counted from the end too: a fetch may outlast the interval (four attempts of 30 s),
            # and each webhook queued behind it would otherwise make a fetch of its own.
            self._attempted_at = self._clock()
            log.error(
                "cannot fetch Replicate's webhook secret (%s); next try in %.0f s at the earliest",
                exc,
                self.interval,
            )
            return
        if self._secret is not None and secret != self._secret:
            log.warning("Replicate's webhook secret has changed; verifying with the new one")
        self._secret, self._verifier = secret, verifier
