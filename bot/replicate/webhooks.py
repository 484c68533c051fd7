"""Verify Replicate's webhooks (Standard Webhooks: HMAC-SHA256 over `id.timestamp.body`).

The signing itself is the `standardwebhooks` package's. Its `Webhook.verify` checks the timestamp
against the wall clock with no way to pass another "now", and lets malformed headers escape as
`ValueError`s; so the checks are done here, in the same order (headers, timestamp, signatures),
with an explicit `now` and one exception type whose message says what is wrong.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from standardwebhooks.webhooks import Webhook

from bot.http_limits import too_deep

__all__ = [
    "TOLERANCE",
    "SignatureMismatch",
    "WebhookPayloadError",
    "WebhookVerificationError",
    "WebhookVerifier",
    "verify_webhook",
]

TOLERANCE = timedelta(minutes=5)
_PREFIX = "whsec_"
_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


class WebhookVerificationError(Exception):
    """The request is not a genuine, fresh webhook; the message says why, never the secret."""


class SignatureMismatch(WebhookVerificationError):
    """Well-formed and fresh, but signed with another secret (or not by Replicate): the one
    refusal after which a rotated secret is worth fetching again."""


class WebhookPayloadError(WebhookVerificationError):
    """Genuinely signed, but not a JSON object Conjure can read: the sender's fault (400), not
    a forgery (401)."""


class WebhookVerifier:
    """Checks webhooks against one signing secret (`whsec_` + base64), decoded once."""

    def __init__(self, secret: str, *, tolerance: timedelta = TOLERANCE) -> None:
        self._webhook = Webhook(_decode_secret(secret))
        self._tolerance = tolerance

    def __repr__(self) -> str:
        return f"WebhookVerifier(tolerance={self._tolerance!r})"

    def verify(
        self, body: bytes, headers: Mapping[str, str], *, now: datetime | None = None
    ) -> dict[str, Any]:
        """The parsed JSON body if the headers sign it, within `tolerance` of `now`.

        Headers may be any mapping in any case (a plain dict, Starlette's `Headers`); `now` is an
        aware datetime, the current time unless given (tests pin it to check old test vectors).
        """
        lowered = {key.lower(): value for key, value in headers.items()}
        values = [lowered.get(name, "").strip() for name in _HEADERS]
        missing = [name for name, value in zip(_HEADERS, values, strict=True) if not value]
        if missing:
            raise WebhookVerificationError(f"missing header(s): {', '.join(missing)}")
        msg_id, timestamp_header, signature_header = values

        timestamp = self._check_timestamp(timestamp_header, now or datetime.now(UTC))
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise WebhookVerificationError("body is not UTF-8") from None
        expected = _signature_bytes(self._webhook.sign(msg_id, timestamp, text))
        if not any(
            hmac.compare_digest(expected, candidate)
            for candidate in _v1_signatures(signature_header)
        ):
            raise SignatureMismatch("no matching signature in webhook-signature")

        try:
            payload = json.loads(text)
        except (ValueError, RecursionError):
            raise WebhookPayloadError("body is not JSON") from None
        if not isinstance(payload, dict):
            raise WebhookPayloadError("body is not a JSON object")
        if too_deep(payload):
            raise WebhookPayloadError("body nests too deeply")
        return payload

    def _check_timestamp(self, header: str, now: datetime) -> datetime:
        if not (header.isascii() and header.isdigit()):
            raise WebhookVerificationError("webhook-timestamp is not a whole number of seconds")
        try:
            timestamp = datetime.fromtimestamp(int(header), tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise WebhookVerificationError("webhook-timestamp is out of range") from None
        if timestamp < now - self._tolerance:
            raise WebhookVerificationError(
                f"webhook-timestamp is too old (more than {self._tolerance} before now)"
            )
        if timestamp > now + self._tolerance:
            raise WebhookVerificationError(
                f"webhook-timestamp is too new (more than {self._tolerance} after now)"
            )
        return timestamp


def verify_webhook(
    secret: str, body: bytes, headers: Mapping[str, str], *, now: datetime | None = None
) -> dict[str, Any]:
    """One-off `WebhookVerifier(secret).verify(body, headers)`; keep a verifier for many."""
    return WebhookVerifier(secret).verify(body, headers, now=now)


def _decode_secret(secret: str) -> bytes:
    """The HMAC key, or a ValueError naming the expected shape (never the value)."""
    if not isinstance(secret, str) or not secret.startswith(_PREFIX):
        raise ValueError("webhook secret must start with 'whsec_'")
    encoded = secret.removeprefix(_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("webhook secret must be 'whsec_' followed by base64") from None
    if not key:
        raise ValueError("webhook secret is empty after 'whsec_'")
    return key


def _signature_bytes(versioned: str) -> bytes:
    return base64.b64decode(versioned.partition(",")[2])


def _v1_signatures(header: str) -> list[bytes]:
    """The decodable `v1,<base64>` entries of a space-separated list; others are skipped."""
    signatures = []
    for entry in header.split():
        version, _, encoded = entry.partition(",")
        if version != "v1" or not encoded:
            continue
        try:
            signatures.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue
    return signatures
