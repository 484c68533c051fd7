"""POST /slack/events: Slack's signature checked on the raw bytes before anything parses them.

bolt verifies signatures too, but its Starlette adapter decodes and parses the body first, so
junk from anyone (invalid UTF-8, a JSON content type with a body that is not JSON, deep JSON, a
non-integer timestamp, a `payload=` that is not JSON) was a 500 with a traceback. Here, in order:

- no signature, a malformed one, a timestamp that is not a number or is more than 5 minutes off,
  a body that is not UTF-8 (Slack sends nothing else) or a signature that does not match: 401,
  before the body is parsed;
- signed, but a body bolt cannot read (or that nests absurdly deep): 400;
- only then is the request handed to bolt (`AsyncApp.async_dispatch`).

The body has already been bounded by bot.http_limits. Refusals are logged by reason only
(bot.rejections): nothing a request carries reaches a log.
"""

from __future__ import annotations

import logging
import re

from slack_bolt.adapter.starlette.async_handler import to_starlette_response
from slack_bolt.async_app import AsyncApp, AsyncBoltRequest
from slack_bolt.error import BoltError
from slack_sdk.signature import Clock, SignatureVerifier
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bot.http_limits import too_deep
from bot.rejections import Rejections

__all__ = ["MAX_BODY", "TOLERANCE_SECONDS", "SlackRequestGate"]

log = logging.getLogger(__name__)

# A slash command is a form of about 15 short fields (64 KiB would be generous); a button
# press, shortcut or view submission carries the whole message or view as JSON, which Slack
# bounds at 50 blocks of at most 3,000 characters, plus its metadata. 1 MiB leaves room for all.
MAX_BODY = 1024 * 1024
TOLERANCE_SECONDS = 5 * 60  # Slack's own rule, and slack_sdk's
_SIGNATURE = re.compile(r"^v0=[0-9a-f]{64}$")
_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")
# What bolt's request parsing raises on a body it cannot read: JSON errors (ValueError), too
# deep JSON (RecursionError), and odd shapes met while it extracts ids (the rest).
_UNREADABLE = (ValueError, RecursionError, TypeError, AttributeError, KeyError, IndexError)


class SlackRequestGate:
    """The endpoint for POST /slack/events (`handle`): verifies, then dispatches to `app`."""

    def __init__(
        self,
        app: AsyncApp,
        signing_secret: str,
        *,
        rejections: Rejections | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._app = app
        self._clock = clock or Clock()
        self._verifier = SignatureVerifier(signing_secret, clock=self._clock)
        self.rejections = rejections or Rejections(log)

    def __repr__(self) -> str:
        return "SlackRequestGate()"

    async def handle(self, request: Request) -> Response:
        """Answer one request: refused, or whatever bolt answers."""
        timestamp = request.headers.get("x-slack-request-timestamp", "")
        signature = request.headers.get("x-slack-signature", "")
        if not _SIGNATURE.match(signature) or not _TIMESTAMP.match(timestamp):
            return self._refuse(401, "Slack request without a well-formed signature")
        if abs(self._clock.now() - int(timestamp)) > TOLERANCE_SECONDS:
            return self._refuse(401, "Slack request with a stale timestamp")
        body = await request.body()
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return self._refuse(401, "Slack request whose body is not UTF-8")
        if not self._verifier.is_valid(text, timestamp, signature):
            return self._refuse(401, "Slack request with a signature that does not match")
        bolt_request = _bolt_request(text, request)
        if bolt_request is None:
            return self._refuse(400, "signed Slack request that bolt cannot read")
        return to_starlette_response(await self._app.async_dispatch(bolt_request))

    def _refuse(self, status: int, reason: str) -> Response:
        self.rejections.note(reason)
        message = "invalid request" if status == 401 else "malformed request"
        return JSONResponse({"error": message}, status_code=status)


def _bolt_request(text: str, request: Request) -> AsyncBoltRequest | None:
    """The request as bolt's Starlette adapter would build it, or None when bolt cannot read
    it (a body whose shape bolt's parsing does not expect is a 500 inside bolt)."""
    try:
        bolt_request = AsyncBoltRequest(
            body=text,
            query=request.query_params,  # type: ignore[arg-type]
            headers=request.headers,  # type: ignore[arg-type]
        )
    except (*_UNREADABLE, BoltError):
        return None
    if not isinstance(bolt_request.body, dict) or too_deep(bolt_request.body):
        return None
    return bolt_request
