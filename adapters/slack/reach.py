"""Reaching a person where the bot cannot post: the command's response_url, then a DM.

A response_url can speak in any conversation the command came from, even one the bot is not in,
but only five times in thirty minutes and never with files. A direct message (conversations.open,
scope `im:write`) can carry files and never expires, so it is where results go when there is no
thread to put them in.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from aiohttp import ClientError
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

log = logging.getLogger(__name__)

SLACK_ERRORS = (SlackApiError, ClientError, TimeoutError)
"""What a Slack call can raise once slack_sdk's own retries are used up."""

PASSING_ERRORS = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)
"""Slack's `error`s (in an HTTP 200 answer) that say "try later", not "never"."""

BAD_TOKENS = frozenset({"invalid_auth", "not_authed", "account_inactive", "token_revoked"})
"""Slack's `error`s for a bot token it no longer takes (the app uninstalled, its token revoked):
no call with it will work until an admin reinstalls the app."""


def error_code(exc: BaseException) -> str:
    """Slack's error code (`not_in_channel`), or the exception's type for transport errors."""
    if isinstance(exc, SlackApiError):
        return str(exc.response.get("error") or "error")
    return type(exc).__name__


def passing(exc: BaseException) -> bool:
    """Whether a Slack call's error may pass: a 429, a 5xx, one of PASSING_ERRORS, a dropped
    connection or a timeout. Anything else is Slack refusing the request as it is."""
    if isinstance(exc, SlackApiError):
        status = exc.response.status_code
        return (
            status == 429 or status >= 500 or (status == 200 and error_code(exc) in PASSING_ERRORS)
        )
    return isinstance(exc, ClientError | TimeoutError | ConnectionError)


def retry_handlers() -> list[AsyncRetryHandler]:
    """Retry dropped connections once, and 429s after their Retry-After (a 429 posted nothing)."""
    return [AsyncConnectionErrorRetryHandler(), AsyncRateLimitErrorRetryHandler(max_retry_count=2)]


def not_resent(client: AsyncWebClient) -> AsyncWebClient:
    """`client` without its retries, for the writes that show an answer as it is written: the
    relay (bot.streaming) sends them again itself, after checking that no instance has delivered
    the answer meanwhile. slack_sdk would send again a call whose connection dropped, which may
    have been applied (an append twice: its text twice), and one it waited a 429's Retry-After
    for, which may land over the whole answer delivered meanwhile. Same session and token."""
    once = copy.copy(client)
    once.retry_handlers = []
    return once


def retry_after(headers: Any) -> float:
    """Slack's Retry-After in seconds (0 when absent or unreadable)."""
    for name, value in (headers or {}).items():
        if name.lower() == "retry-after":
            try:
                return max(0.0, float(value if isinstance(value, str) else value[0]))
            except (TypeError, ValueError, IndexError):
                return 0.0
    return 0.0


async def respond(
    response_url: str | None,
    text: str,
    *,
    in_channel: bool,
    replace_original: bool | None = None,
    blocks: list[dict[str, Any]] | None = None,
) -> str | None:
    """Post `text` through a command's response_url; in_channel falls back to ephemeral.
    A button press's response_url answers with `replace_original=False`: a new message, not
    an edit of the one that carried the button.

    Returns the response_type Slack accepted, or None when it accepted neither (the URL has
    expired, been used five times, or Slack is unreachable).
    """
    if not response_url:
        return None
    client = AsyncWebhookClient(response_url, retry_handlers=retry_handlers())
    kinds = ["in_channel", "ephemeral"] if in_channel else ["ephemeral"]
    for kind in kinds:
        try:
            response = await client.send(
                text=text, response_type=kind, replace_original=replace_original, blocks=blocks
            )
        except (ClientError, TimeoutError) as exc:
            log.warning("response_url post failed: %s", type(exc).__name__)
            return None
        if response.status_code == 200:
            return kind
        log.warning("response_url refused an %s post: %s", kind, response.status_code)
    return None


async def open_dm(client: AsyncWebClient, user_id: str) -> str:
    """The id of the bot's direct-message conversation with `user_id`."""
    response = await client.conversations_open(users=user_id)
    return str(response["channel"]["id"])
