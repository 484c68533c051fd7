"""Conjure with Slack, end to end on loopback: the sandbox, the fake Slack API, the real app.

`running_slack_conjure` starts the real Starlette app under uvicorn with the Slack platform's
routes, its Web API client pointed at the fake through SLACK_API_URL. `SlackConjure.slash` sends
a slash command the way Slack does: a form body with every documented field, signed with the
signing secret (`v0=` + HMAC-SHA256 of `v0:{timestamp}:{body}`). `SlackConjure.press` clicks a
button on a message the fake recorded: a signed `block_actions` payload (form field `payload`).
Give `running_slack_conjure` an existing `fake` to run a second instance (or a restarted one)
against the same Slack.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import itertools
import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx

from adapters.platforms import run_platform
from bot.app import create_app
from bot.config import Settings
from bot.jobs import JobService
from bot.runtime import Runtime
from bot.serving import bind_socket, serve_app, socket_url
from tests.fakes.slack_api import BOT_TOKEN, TEAM_ID, FakeSlack, Message, serve_fake_slack
from tests.harness import make_settings

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
_response_ids = itertools.count(1)
_trigger_ids = itertools.count(1)
_press_ids = itertools.count(1)


def sign(secret: str, timestamp: int, body: str) -> str:
    """Slack's request signature."""
    base = f"v0:{timestamp}:{body}".encode()
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def signed_headers(secret: str, body: str, timestamp: int | None = None) -> dict[str, str]:
    """The headers Slack sends with a form body: its content type, timestamp and signature."""
    stamp = int(time.time()) if timestamp is None else timestamp
    return {
        "content-type": "application/x-www-form-urlencoded",
        "x-slack-request-timestamp": str(stamp),
        "x-slack-signature": sign(secret, stamp, body),
    }


def command_fields(
    fake: FakeSlack,
    command: str,
    text: str,
    *,
    user_id: str = "U0ADA",
    user_name: str = "ada",
    channel_id: str = "C0GENERAL",
    channel_name: str = "general",
    response_id: str | None = None,
    wire_text: str | None = None,
    trigger_id: str | None = None,
) -> dict[str, str]:
    """Every field Slack sends with a slash command.

    `text` is what the person typed, escaped as Slack escapes it; `wire_text` is sent as given,
    for markup Slack itself writes (a should_escape command turns "@eve" into "<@U0EVE|eve>").
    Each command gets its own `trigger_id` unless one is given (a retry carries the first's).
    """
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    escaped = escaped if wire_text is None else wire_text
    return {
        "token": "deprecated-verification-token",
        "team_id": TEAM_ID,
        "team_domain": "fake-team",
        "channel_id": channel_id,
        "channel_name": channel_name,
        "user_id": user_id,
        "user_name": user_name,
        "command": command,
        "text": escaped,
        "api_app_id": "A0CONJURE",
        "enterprise_id": "",
        "enterprise_name": "",
        "is_enterprise_install": "false",
        "response_url": fake.response_url(response_id or f"r{next(_response_ids)}"),
        "trigger_id": trigger_id or _new_trigger_id(),
    }


def _new_trigger_id() -> str:
    """Unique, across processes too (the benchmark's senders), as Slack's are."""
    return f"{int(time.time())}.{next(_trigger_ids)}.{secrets.token_hex(10)}"


@dataclass
class SlashResult:
    """The HTTP answer to a slash command, how long it took, and its response_url id."""

    response: httpx.Response
    seconds: float
    response_id: str

    @property
    def ack(self) -> dict[str, Any]:
        """The ack body (bolt answers an empty 200 for a bare `ack()`)."""
        return self.response.json() if self.response.content else {}


@dataclass
class PressResult:
    """The HTTP answer to a button press, and the id of its response_url."""

    response: httpx.Response
    response_id: str


def block_actions_payload(
    fake: FakeSlack,
    message: Message,
    button: dict[str, Any],
    *,
    user_id: str,
    user_name: str,
    response_id: str,
) -> dict[str, Any]:
    """What Slack sends when `button` on `message` is clicked (the documented fields)."""
    container: dict[str, Any] = {
        "type": "message",
        "message_ts": message.ts,
        "channel_id": message.channel,
        "is_ephemeral": False,
    }
    shown: dict[str, Any] = {
        "type": "message",
        "user": "U0BOT",
        "ts": message.ts,
        "text": message.text,
        "blocks": message.blocks or [],
    }
    if message.thread_ts is not None:
        container["thread_ts"] = message.thread_ts
        shown["thread_ts"] = message.thread_ts
    block_id = next(
        (
            block.get("block_id")
            for block in message.blocks or []
            if button in block.get("elements", [])
        ),
        "actions",
    )
    return {
        "type": "block_actions",
        "user": {"id": user_id, "username": user_name, "name": user_name, "team_id": TEAM_ID},
        "api_app_id": "A0CONJURE",
        "token": "deprecated-verification-token",
        "container": container,
        "trigger_id": _new_trigger_id(),
        "team": {"id": TEAM_ID, "domain": "fake-team"},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": message.channel, "name": "general"},
        "message": shown,
        "state": {"values": {}},
        "response_url": fake.response_url(response_id),
        "actions": [
            {
                "action_id": button["action_id"],
                "block_id": block_id,
                "text": button["text"],
                "value": button.get("value"),
                "style": button.get("style"),
                "type": "button",
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }


@dataclass
class SlackConjure:
    url: str
    runtime: Runtime
    fake: FakeSlack
    http: httpx.AsyncClient
    signing_secret: str = SIGNING_SECRET
    sent: list[SlashResult] = field(default_factory=list)

    @property
    def service(self) -> JobService:
        return self.runtime.service

    async def slash(
        self,
        command: str,
        text: str = "",
        *,
        timestamp: int | None = None,
        secret: str | None = None,
        retry_num: int | None = None,
        **fields: Any,
    ) -> SlashResult:
        """POST a signed slash command to /slack/events, as Slack would; with `retry_num`, as
        Slack retries one it got no answer to in time (give the first one's `trigger_id`)."""
        values = command_fields(self.fake, command, text, **fields)
        body = urlencode(values)
        headers = signed_headers(secret or self.signing_secret, body, timestamp)
        if retry_num is not None:
            headers["x-slack-retry-num"] = str(retry_num)
            headers["x-slack-retry-reason"] = "http_timeout"
        started = time.perf_counter()
        response = await self.http.post("/slack/events", content=body, headers=headers)
        result = SlashResult(
            response, time.perf_counter() - started, values["response_url"].rsplit("/", 1)[1]
        )
        self.sent.append(result)
        return result

    async def press(
        self,
        message: Message,
        label: str,
        *,
        user_id: str = "U0ADA",
        user_name: str = "ada",
        response_id: str | None = None,
    ) -> PressResult:
        """Click the button labelled `label` on `message` as `user_id`, as Slack would: a
        signed POST to /slack/events whose form field `payload` is the block_actions JSON."""
        response_id = response_id or f"p{next(_press_ids)}"
        payload = block_actions_payload(
            self.fake,
            message,
            message.button(label),
            user_id=user_id,
            user_name=user_name,
            response_id=response_id,
        )
        body = urlencode({"payload": json.dumps(payload)})
        headers = signed_headers(self.signing_secret, body)
        response = await self.http.post("/slack/events", content=body, headers=headers)
        return PressResult(response, response_id)

    async def shortcut(
        self,
        callback_id: str,
        message: Message,
        *,
        user_id: str = "U0ADA",
        user_name: str = "ada",
        response_id: str | None = None,
        trigger_id: str | None = None,
    ) -> PressResult:
        """Use the message shortcut `callback_id` on `message` (from the message's ⋯ menu), as
        Slack sends it: a signed `message_action` payload with the whole message and its files.
        Give an earlier one's `trigger_id` for Slack's retry of it."""
        response_id = response_id or f"s{next(_press_ids)}"
        shown: dict[str, Any] = {
            "type": "message",
            "user": "U0EVE",
            "ts": message.ts,
            "text": message.text,
            "files": [self.fake.file_object(f) for f in message.files],
        }
        if message.thread_ts is not None:
            shown["thread_ts"] = message.thread_ts
        payload = {
            "type": "message_action",
            "callback_id": callback_id,
            "trigger_id": trigger_id or _new_trigger_id(),
            "action_ts": f"{time.time():.6f}",
            "message_ts": message.ts,
            "team": {"id": TEAM_ID, "domain": "fake-team"},
            "user": {"id": user_id, "username": user_name, "name": user_name, "team_id": TEAM_ID},
            "channel": {"id": message.channel, "name": "general"},
            "message": shown,
            "response_url": self.fake.response_url(response_id),
            "token": "deprecated-verification-token",
            "is_enterprise_install": False,
            "enterprise": None,
        }
        body = urlencode({"payload": json.dumps(payload)})
        headers = signed_headers(self.signing_secret, body)
        response = await self.http.post("/slack/events", content=body, headers=headers)
        return PressResult(response, response_id)

    async def settle(self, sandbox: Any) -> None:
        """Until the sandbox has sent everything and Conjure has delivered everything."""
        await self.service.wait_idle()
        await sandbox.sandbox.wait_idle()
        await self.service.wait_idle()


def slack_settings(
    sandbox: Any, database_url: str, fake: FakeSlack, public_url: str, **extra: Any
) -> Settings:
    """Settings for the sandbox with Slack pointed at `fake`; `extra` overrides any of them."""
    values: dict[str, Any] = {
        "slack_bot_token": BOT_TOKEN,
        "slack_signing_secret": SIGNING_SECRET,
        "slack_api_url": fake.api_url,
        **extra,
    }
    return make_settings(sandbox, database_url, public_url=public_url, **values)


@contextlib.asynccontextmanager
async def running_slack_conjure(
    sandbox: Any,
    database_url: str,
    *,
    progress_interval: float = 2.0,
    fake: FakeSlack | None = None,
    **extra: Any,
) -> AsyncIterator[SlackConjure]:
    """The real app with Slack on loopback, talking to `sandbox` and a fresh fake Slack (or
    `fake`, one already serving: another instance's, or the one before a restart)."""
    async with contextlib.AsyncExitStack() as stack:
        if fake is None:
            fake = await stack.enter_async_context(serve_fake_slack())
        sock = bind_socket()
        settings = slack_settings(sandbox, database_url, fake, socket_url(sock), **extra)
        runtime = await Runtime.start(settings, progress_interval=progress_interval)
        try:
            async with run_platform(runtime, "slack") as slack:
                async with serve_app(create_app(runtime, slack.routes), sock=sock) as url:
                    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
                        yield SlackConjure(url, runtime, fake, http)
        finally:
            await runtime.aclose()
