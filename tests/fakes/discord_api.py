"""A fake of Discord on loopback: the REST API, recording every call, and a minimal gateway.

It answers the handful of routes discord.py uses for a slash-command bot (login, command sync,
interaction callbacks, webhook edits and follow-ups, channel messages), keeps the messages it
created so tests can read what a person would see, and can misbehave on purpose: 429s with
`retry_after` (and the `Via` header discord.py insists on), expired interaction tokens, and an
outage: every matching call answered 5xx or 429 for a stretch of time.
Channel posts honour `enforce_nonce`: the same author and nonce within a few minutes gets the
message created the first time. A channel can refuse the bot (403 50001 / 50013, 404 10003), and
the bot can open a DM with a user (Create DM), whose DMs may be closed (403 50007).
Answers carry `Content-Type: application/json` exactly, as discord.py only parses that.
The gateway does just HELLO, heartbeat ACKs, IDENTIFY -> READY and dispatching events, enough
for `conjure serve`'s real connect path to receive an INTERACTION_CREATE.
Messages keep their `components` (buttons); component interactions (type 3) are answered as
Discord answers them (a deferred update makes the button's message the "original"), and
attachments are served from the fake's own CDN at their `url`, as Discord's signed links are.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import mimetypes
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import Message
from email.parser import BytesHeaderParser
from typing import Any

import discord
from aiohttp import WSMsgType, web
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.serving import bind_socket, serve_app, socket_url

API_PREFIX = "/api/v10"
APP_ID = 1_300_000_000_000_000_001  # also the bot user's id, as for every modern application
TOKEN_LIFETIME = timedelta(minutes=15)
NONCE_MEMORY = 300.0  # seconds: a channel post with enforce_nonce returns the earlier one
CALLBACK_DEADLINE = timedelta(seconds=3)
EPHEMERAL = 1 << 6
LOADING = 1 << 7


@dataclass(frozen=True)
class Part:
    """One part of a multipart body."""

    name: str
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass
class Call:
    """One request as the fake received it, and the status it answered."""

    method: str
    path: str  # without the /api/v10 prefix
    query: dict[str, str]
    headers: dict[str, str]
    json: Any
    parts: list[Part]
    at: float  # time.monotonic() on arrival
    status: int = 0

    @property
    def payload(self) -> dict[str, Any]:
        """The JSON body, or the `payload_json` part of a multipart body."""
        if self.json is not None:
            return self.json
        for part in self.parts:
            if part.name == "payload_json":
                return json.loads(part.data)
        return {}

    @property
    def files(self) -> list[Part]:
        return [part for part in self.parts if part.filename is not None]


@dataclass
class RateLimit:
    """Answer the next `count` calls matching `method` and `path` (a regex) with 429."""

    method: str
    path: str
    count: int
    retry_after: float


@dataclass
class Outage:
    """Answer every call matching `method` (None: any) and `path` (a regex, searched) with
    `status` until `until` (time.monotonic()); a 429 carries `retry_after`."""

    status: int
    until: float
    path: str = ""
    method: str | None = None
    retry_after: float = 1.0

    def matches(self, call: Call) -> bool:
        if time.monotonic() >= self.until:
            return False
        if self.method is not None and self.method != call.method:
            return False
        return re.search(self.path, call.path) is not None


_Handler = Callable[["FakeDiscord", Call, dict[str, str]], Awaitable[Response]]


@dataclass
class FakeDiscord:
    """The fake's state: calls, messages, synced commands, and the switches tests flip."""

    url: str = ""  # base URL without the /api/v10 prefix
    bot_token: str = "fake-bot-token"
    calls: list[Call] = field(default_factory=list)
    messages: dict[int, dict[str, Any]] = field(default_factory=dict)
    commands: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # "global"/guild id
    rate_limits: list[RateLimit] = field(default_factory=list)
    outages: list[Outage] = field(default_factory=list)
    expire_tokens: bool = False  # every interaction-token call answers 401, as after 15 minutes
    clock_shift: timedelta = timedelta(0)  # "now" moves forward by this much (token expiry)
    attachment_delay: float = 0.0  # seconds the CDN takes before serving an attachment
    interactions: dict[str, dict[str, Any]] = field(default_factory=dict)  # token -> payload
    # channel id -> (status, code) a bot post there is refused with: 403 50001 Missing Access
    # (the bot cannot see it: not in the guild, a user-installed app), 403 50013 Missing
    # Permissions (no Send Messages or Attach Files), 404 10003 Unknown Channel (deleted)
    refused_channels: dict[int, tuple[int, int]] = field(default_factory=dict)
    closed_dms: set[int] = field(default_factory=set)  # users whose DMs refuse the bot (50007)
    dm_channels: dict[int, int] = field(default_factory=dict)  # user id -> DM channel id
    hosted: dict[str, dict[str, Any]] = field(default_factory=dict)  # attached to commands
    _originals: dict[str, int] = field(default_factory=dict)  # token -> original message id
    # (author id, nonce) -> (message id, when): enforce_nonce's memory of recent creates
    _nonces: dict[tuple[str, str], tuple[int, float]] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def api_url(self) -> str:
        return self.url + API_PREFIX

    # ---- switches ---------------------------------------------------------------------

    def rate_limit(
        self, method: str, path: str, *, count: int = 1, retry_after: float = 0.5
    ) -> None:
        """Answer the next `count` matching calls (path is a regex, searched) with 429."""
        self.rate_limits.append(RateLimit(method.upper(), path, count, retry_after))

    def outage(
        self,
        status: int,
        seconds: float,
        *,
        path: str = "",
        method: str | None = None,
        retry_after: float = 1.0,
    ) -> None:
        """Answer every matching call (path is a regex, searched) with `status` for `seconds`."""
        until = time.monotonic() + seconds
        self.outages.append(Outage(status, until, path, method and method.upper(), retry_after))

    def register_interaction(self, payload: dict[str, Any]) -> None:
        """Remember an interaction Discord "sent", so its callback and token can be checked."""
        self.interactions[payload["token"]] = payload

    # ---- what tests read --------------------------------------------------------------

    def find(self, method: str, path: str) -> list[Call]:
        """Calls with this method whose path matches the regex `path` (searched)."""
        return [c for c in self.calls if c.method == method and re.search(path, c.path)]

    def original(self, token: str) -> dict[str, Any] | None:
        """The interaction's original response message as it stands now."""
        message_id = self._originals.get(token)
        return None if message_id is None else self.messages.get(message_id)

    def channel_messages(self, channel_id: int) -> list[dict[str, Any]]:
        """Messages the bot posted in a channel with its own token (not via interactions)."""
        return [
            m
            for m in self.messages.values()
            if m["channel_id"] == str(channel_id) and m.get("webhook_id") is None
        ]

    async def wait_for(self, condition: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Until `condition()` is truthy (checked after every call); returns its value."""
        deadline = time.monotonic() + timeout
        while not (value := condition()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"condition not met; calls: {self.summary()}")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(remaining, 0.1))
        return value

    def summary(self) -> list[str]:
        return [f"{c.method} {c.path} -> {c.status}" for c in self.calls]

    # ---- building blocks --------------------------------------------------------------

    def snowflake(self) -> int:
        return discord.utils.time_snowflake(datetime.now(UTC)) + next(self._ids)

    def bot_user(self) -> dict[str, Any]:
        return {
            "id": str(APP_ID),
            "username": "Conjure",
            "discriminator": "0",
            "global_name": None,
            "avatar": None,
            "bot": True,
            "verified": True,
            "mfa_enabled": False,
            "flags": 0,
            "public_flags": 0,
        }

    def new_message(
        self, channel_id: str, payload: dict[str, Any], files: list[Part], **extra: Any
    ) -> dict[str, Any]:
        message_id = self.snowflake()
        message = {
            "id": str(message_id),
            "channel_id": channel_id,
            "type": 0,
            "author": self.bot_user(),
            "content": "",
            "attachments": [],
            "embeds": [],
            "mentions": [],
            "mention_roles": [],
            "mention_everyone": False,
            "pinned": False,
            "tts": False,
            "timestamp": datetime.now(UTC).isoformat(),
            "edited_timestamp": None,
            "flags": 0,
            "components": [],
            **extra,
        }
        self.messages[message_id] = message
        return self.apply(message, payload, files)

    def apply(
        self, message: dict[str, Any], payload: dict[str, Any], files: list[Part]
    ) -> dict[str, Any]:
        """Change a message as Discord does for a create or edit body."""
        if "content" in payload:
            message["content"] = payload["content"] or ""
        if "flags" in payload and payload["flags"] is not None:
            message["flags"] = int(payload["flags"]) | (message["flags"] & EPHEMERAL)
        if "attachments" in payload:
            by_field = {part.name: part for part in files}
            kept = {a["id"]: a for a in message["attachments"]}
            attachments = []
            for item in payload["attachments"] or []:
                upload = by_field.get(f"files[{item['id']}]")
                if upload is None:  # an existing attachment to keep
                    if str(item["id"]) in kept:
                        attachments.append(kept[str(item["id"])])
                    continue
                attachment_id = self.snowflake()
                attachments.append(
                    {
                        "id": str(attachment_id),
                        "filename": item.get("filename") or upload.filename,
                        "size": len(upload.data),
                        "url": f"{self.url}/attachments/{attachment_id}/{upload.filename}",
                        "proxy_url": f"{self.url}/attachments/{attachment_id}/{upload.filename}",
                        "content_type": _detected_type(upload),
                        "data": upload.data,  # not in Discord's answer; stripped when sent
                    }
                )
            message["attachments"] = attachments
        if "components" in payload:
            message["components"] = payload["components"] or []
        if payload.get("message_reference"):
            message["message_reference"] = payload["message_reference"]
        return message

    def as_sent(self, message: dict[str, Any]) -> dict[str, Any]:
        """A stored message as Discord sends it (in an answer, or in a component interaction)."""
        return _public(message)

    def host_attachment(
        self, filename: str, data: bytes, content_type: str | None
    ) -> dict[str, Any]:
        """A file a person attached to a slash command: served by the CDN, and described as
        Discord describes it in `data.resolved.attachments` (`size` may be set to lie)."""
        attachment_id = str(self.snowflake())
        url = f"{self.url}/attachments/{attachment_id}/{filename}"
        attachment = {
            "id": attachment_id,
            "filename": filename,
            "size": len(data),
            "url": url,
            "proxy_url": url,
            "content_type": content_type,
            "data": data,
        }
        if content_type is None:
            del attachment["content_type"]
        self.hosted[attachment_id] = attachment
        return {k: v for k, v in attachment.items() if k != "data"}

    def attachment(self, attachment_id: str) -> dict[str, Any] | None:
        """A stored attachment (with its bytes), on any message still there."""
        for message in self.messages.values():
            for attachment in message["attachments"]:
                if attachment["id"] == attachment_id:
                    return attachment
        return self.hosted.get(attachment_id)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.clock_shift

    def created(self, token: str) -> datetime | None:
        interaction = self.interactions.get(token)
        return None if interaction is None else discord.utils.snowflake_time(int(interaction["id"]))

    def token_dead(self, token: str) -> bool:
        """Discord refuses an interaction token after 15 minutes (or when a test says so)."""
        created = self.created(token)
        return self.expire_tokens or created is None or self.now() - created > TOKEN_LIFETIME


def _detected_type(upload: Part) -> str | None:
    """Discord detects an upload's type; discord.py sends every file as octet-stream."""
    given = upload.content_type
    if given and given != "application/octet-stream":
        return given
    return mimetypes.guess_type(upload.filename or "")[0] or given


def _public(message: dict[str, Any]) -> dict[str, Any]:
    """A message as Discord sends it (without the bytes the fake keeps for tests)."""
    attachments = [{k: v for k, v in a.items() if k != "data"} for a in message["attachments"]]
    return {**message, "attachments": attachments}


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(data, status_code=status, headers=headers)


def _error(status: int, message: str, code: int) -> Response:
    return _json({"message": message, "code": code}, status)


def parse_multipart(content_type: str, body: bytes) -> list[Part]:
    """Split a multipart/form-data body exactly (file bytes untouched)."""
    header = BytesHeaderParser().parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode())
    boundary = header.get_param("boundary")
    if not isinstance(boundary, str):
        return []
    parts = []
    for section in body.split(b"--" + boundary.encode())[1:]:
        if section.startswith(b"--"):
            break
        head, _, data = section.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        headers: Message = BytesHeaderParser().parsebytes(head + b"\r\n\r\n")
        name = headers.get_param("name", header="content-disposition")
        parts.append(
            Part(
                name=str(name),
                filename=headers.get_filename(),
                content_type=headers.get_content_type() if "content-type" in headers else None,
                data=data.removesuffix(b"\r\n"),
            )
        )
    return parts


# ---- handlers -------------------------------------------------------------------------


async def _users_me(fake: FakeDiscord, call: Call, _: dict[str, str]) -> Response:
    if call.headers.get("authorization") != f"Bot {fake.bot_token}":
        return _error(401, "401: Unauthorized", 0)
    return _json(fake.bot_user())


async def _application(fake: FakeDiscord, call: Call, _: dict[str, str]) -> Response:
    return _json(
        {
            "id": str(APP_ID),
            "name": "Conjure",
            "icon": None,
            "description": "",
            "summary": "",
            "rpc_origins": [],
            "bot_public": True,
            "bot_require_code_grant": False,
            "owner": {**fake.bot_user(), "bot": False, "id": "42", "username": "owner"},
            "team": None,
            "verify_key": "0" * 64,
            "flags": 0,
            "bot": fake.bot_user(),
            "interactions_endpoint_url": None,
        }
    )


async def _gateway(fake: FakeDiscord, call: Call, _: dict[str, str]) -> Response:
    return _json({"url": "wss://gateway.invalid"})


async def _sync(fake: FakeDiscord, call: Call, params: dict[str, str]) -> Response:
    scope = params.get("guild_id", "global")
    synced = []
    for command in call.json or []:
        entry = {
            "id": str(fake.snowflake()),
            "application_id": str(APP_ID),
            "version": str(fake.snowflake()),
            "default_member_permissions": None,
            "type": 1,
            "nsfw": False,
            **command,
        }
        if scope != "global":
            entry["guild_id"] = scope
        synced.append(entry)
    fake.commands[scope] = synced
    return _json(synced)


async def _callback(fake: FakeDiscord, call: Call, params: dict[str, str]) -> Response:
    body = call.payload
    kind = body.get("type")
    data = body.get("data") or {}
    token = params["token"]
    interaction = fake.interactions.get(token)
    created = fake.created(token)
    if interaction is None or interaction["id"] != params["interaction_id"] or created is None:
        return _error(404, "Unknown interaction", 10062)
    if fake.now() - created > CALLBACK_DEADLINE:
        return _error(404, "Unknown interaction", 10062)  # Discord gives 3 seconds
    if token in fake._originals:
        return _error(400, "Interaction has already been acknowledged.", 40060)
    component = interaction["type"] == 3
    if component and kind in (6, 7):
        return _update_callback(fake, call, params, interaction)
    if kind not in (4, 5):
        return _error(400, f"fake: callback type {kind} not supported", 0)
    flags = int(data.get("flags") or 0)
    if kind == 5:
        flags |= LOADING
    metadata: dict[str, Any] = {
        "id": params["interaction_id"],
        "type": interaction["type"],
        "user": (interaction.get("member") or interaction)["user"],
        "authorizing_integration_owners": interaction["authorizing_integration_owners"],
    }
    if component:  # a response to a button: it names the message the button is on
        metadata["interacted_message_id"] = interaction["message"]["id"]
    else:
        metadata |= {"name": interaction["data"]["name"], "command_type": 1}
    message = fake.new_message(
        interaction["channel_id"],
        {**data, "flags": flags},
        call.files,
        webhook_id=str(APP_ID),
        application_id=str(APP_ID),
        interaction_metadata=metadata,
    )
    fake._originals[token] = int(message["id"])
    answer = {
        "interaction": {
            "id": params["interaction_id"],
            "type": interaction["type"],
            "response_message_id": message["id"],
            "response_message_loading": kind == 5,
            "response_message_ephemeral": bool(flags & EPHEMERAL),
        },
        "resource": {"type": kind, "message": _public(message)},
    }
    return _json(answer)


def _update_callback(
    fake: FakeDiscord, call: Call, params: dict[str, str], interaction: dict[str, Any]
) -> Response:
    """A component's DEFERRED_UPDATE_MESSAGE (6) or UPDATE_MESSAGE (7): no new message; the
    button's message becomes the interaction's original (7 edits it at once)."""
    message = fake.messages.get(int(interaction["message"]["id"]))
    if message is None:
        return _error(404, "Unknown Message", 10008)
    fake._originals[params["token"]] = int(message["id"])
    kind = call.payload["type"]
    if kind == 7:
        fake.apply(message, call.payload.get("data") or {}, call.files)
        message["edited_timestamp"] = datetime.now(UTC).isoformat()
    answer: dict[str, Any] = {
        "interaction": {
            "id": params["interaction_id"],
            "type": 3,
            "response_message_id": message["id"],
            "response_message_loading": False,
            "response_message_ephemeral": False,
        },
        "resource": {"type": kind, **({"message": _public(message)} if kind == 7 else {})},
    }
    return _json(answer)


def _webhook_message(fake: FakeDiscord, params: dict[str, str]) -> dict[str, Any] | None:
    if params["message_id"] == "@original":
        return fake.original(params["token"])
    return fake.messages.get(int(params["message_id"]))


async def _edit_message(fake: FakeDiscord, call: Call, params: dict[str, str]) -> Response:
    message = _webhook_message(fake, params)
    if message is None:
        return _error(404, "Unknown Message", 10008)
    message["flags"] &= ~LOADING
    fake.apply(message, call.payload, call.files)
    message["edited_timestamp"] = datetime.now(UTC).isoformat()
    return _json(_public(message))


async def _get_message(fake: FakeDiscord, call: Call, params: dict[str, str]) -> Response:
    message = _webhook_message(fake, params)
    return _error(404, "Unknown Message", 10008) if message is None else _json(_public(message))


async def _delete_message(fake: FakeDiscord, call: Call, params: dict[str, str]) -> Response:
    message = _webhook_message(fake, params)
    if message is None:
        return _error(404, "Unknown Message", 10008)
    del fake.messages[int(message["id"])]
    return Response(status_code=204)


async def _follow_up(fake: FakeDiscord, call: Call, params: dict[str, str]) -> Response:
    """A follow-up, as Discord documents it (Create Followup Message): sent while a deferred
    response still loads, it is no new message but an edit of that response, which keeps its
    visibility (the ephemeral flag is ignored)."""
    original = fake.original(params["token"])
    if original is None:
        return _error(404, "Unknown Webhook", 10015)
    if original["flags"] & LOADING:
        original["flags"] &= ~LOADING
        fake.apply(original, {k: v for k, v in call.payload.items() if k != "flags"}, call.files)
        original["edited_timestamp"] = datetime.now(UTC).isoformat()
        return _json(_public(original))
    message = fake.new_message(
        original["channel_id"], call.payload, call.files, webhook_id=str(APP_ID)
    )
    return _json(_public(message))


_REFUSALS = {50001: "Missing Access", 50013: "Missing Permissions", 10003: "Unknown Channel"}


async def _create_dm(fake: FakeDiscord, call: Call, _: dict[str, str]) -> Response:
    """Create DM (POST /users/@me/channels): the DM channel with a user, the same one each
    time. Discord makes it even when the user's DMs are closed; posting there then fails."""
    if call.headers.get("authorization") != f"Bot {fake.bot_token}":
        return _error(401, "401: Unauthorized", 0)
    user_id = int(call.payload["recipient_id"])
    channel_id = fake.dm_channels.setdefault(user_id, fake.snowflake())
    recipient = {"id": str(user_id), "username": "someone", "discriminator": "0", "avatar": None}
    return _json(
        {"id": str(channel_id), "type": 1, "last_message_id": None, "recipients": [recipient]}
    )


async def _channel_message(fake: FakeDiscord, call: Call, params: dict[str, str]) -> Response:
    if call.headers.get("authorization") != f"Bot {fake.bot_token}":
        return _error(401, "401: Unauthorized", 0)
    refused = fake.refused_channels.get(int(params["channel_id"]))
    if refused is not None:
        status, code = refused
        return _error(status, _REFUSALS.get(code, "Refused"), code)
    dm_of = {channel: user for user, channel in fake.dm_channels.items()}
    if dm_of.get(int(params["channel_id"])) in fake.closed_dms:
        return _error(403, "Cannot send messages to this user", 50007)
    reference = call.payload.get("message_reference")
    if reference and reference.get("fail_if_not_exists", True):
        if int(reference["message_id"]) not in fake.messages:
            return _error(400, "Invalid Form Body (message_reference: Unknown message)", 50035)
    nonce = call.payload.get("nonce")
    key = (str(fake.bot_user()["id"]), str(nonce))
    if nonce is not None and call.payload.get("enforce_nonce"):
        seen = fake._nonces.get(key)
        if seen is not None and time.monotonic() - seen[1] < NONCE_MEMORY:
            return _json(_public(fake.messages[seen[0]]))  # the same author and nonce: as before
    message = fake.new_message(params["channel_id"], call.payload, call.files)
    if nonce is not None:
        fake._nonces[key] = (int(message["id"]), time.monotonic())
    return _json(_public(message))


async def _attachment(fake: FakeDiscord, call: Call, params: dict[str, str]) -> Response:
    """The CDN: an attachment's bytes at its URL, while its message exists."""
    await asyncio.sleep(fake.attachment_delay)
    attachment = fake.attachment(params["attachment_id"])
    if attachment is None or attachment["filename"] != params["filename"]:
        return Response("Not Found", status_code=404, media_type="text/plain")
    media_type = attachment.get("content_type") or "application/octet-stream"
    return Response(attachment["data"], media_type=media_type)


_ROUTES: list[tuple[str, re.Pattern[str], _Handler]] = [
    (method, re.compile(pattern), handler)
    for method, pattern, handler in [
        ("GET", r"/users/@me", _users_me),
        ("GET", r"/oauth2/applications/@me", _application),
        ("GET", r"/gateway(/bot)?", _gateway),
        ("PUT", r"/applications/(?P<app_id>\d+)/commands", _sync),
        ("PUT", r"/applications/(?P<app_id>\d+)/guilds/(?P<guild_id>\d+)/commands", _sync),
        ("POST", r"/interactions/(?P<interaction_id>\d+)/(?P<token>[^/]+)/callback", _callback),
        ("PATCH", r"/webhooks/(?P<app_id>\d+)/(?P<token>[^/]+)/messages/(?P<message_id>[^/]+)",
         _edit_message),
        ("GET", r"/webhooks/(?P<app_id>\d+)/(?P<token>[^/]+)/messages/(?P<message_id>[^/]+)",
         _get_message),
        ("DELETE", r"/webhooks/(?P<app_id>\d+)/(?P<token>[^/]+)/messages/(?P<message_id>[^/]+)",
         _delete_message),
        ("POST", r"/webhooks/(?P<app_id>\d+)/(?P<token>[^/]+)", _follow_up),
        ("POST", r"/channels/(?P<channel_id>\d+)/messages", _channel_message),
        ("POST", r"/users/@me/channels", _create_dm),
        ("GET", r"/attachments/(?P<attachment_id>\d+)/(?P<filename>[^/]+)", _attachment),
    ]
]  # fmt: skip


def create_discord_app(fake: FakeDiscord) -> Starlette:
    """The ASGI app serving `fake` under /api/v10."""

    async def endpoint(request: Request) -> Response:
        body = await request.body()
        content_type = request.headers.get("content-type", "")
        call = Call(
            method=request.method,
            path=request.url.path.removeprefix(API_PREFIX),
            query=dict(request.query_params),
            headers={k.lower(): v for k, v in request.headers.items()},
            json=json.loads(body) if body and content_type.startswith("application/json") else None,
            parts=parse_multipart(content_type, body) if "multipart" in content_type else [],
            at=time.monotonic(),
        )
        fake.calls.append(call)
        try:
            response = await _answer(fake, call)
        except Exception as exc:  # a fake bug must show up as a failing call, not a hang
            response = _error(500, f"fake error: {type(exc).__name__}: {exc}", 0)
        call.status = response.status_code
        fake.changed.set()
        return response

    return Starlette(
        routes=[Route("/{path:path}", endpoint, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])]
    )


async def _answer(fake: FakeDiscord, call: Call) -> Response:
    for outage in fake.outages:
        if outage.matches(call):
            if outage.status == 429:
                return _rate_limited(outage.retry_after)
            return _error(outage.status, f"{outage.status}: Server Error", 0)
    for limit in fake.rate_limits:
        if limit.count > 0 and limit.method == call.method and re.search(limit.path, call.path):
            limit.count -= 1
            return _rate_limited(limit.retry_after)
    for method, pattern, handler in _ROUTES:
        match = pattern.fullmatch(call.path)
        if method != call.method or match is None:
            continue
        params = match.groupdict()
        token = params.get("token")
        if token is not None and call.path.startswith("/webhooks/") and fake.token_dead(token):
            return _error(401, "Invalid Webhook Token", 50027)
        return await handler(fake, call, params)
    return _error(404, "404: Not Found", 0)


def _rate_limited(retry_after: float) -> Response:
    body = {"message": "You are being rate limited.", "retry_after": retry_after}
    headers = {
        "Retry-After": str(max(1, round(retry_after))),
        "X-RateLimit-Scope": "user",
        "Via": "1.1 google",
    }
    return _json({**body, "global": False}, 429, headers)


@contextlib.asynccontextmanager
async def running_fake_discord() -> AsyncIterator[FakeDiscord]:
    """The fake served on an ephemeral loopback port."""
    fake = FakeDiscord()
    async with serve_app(create_discord_app(fake)) as url:
        fake.url = url
        yield fake


# ---- the gateway ------------------------------------------------------------------------


@dataclass
class FakeGateway:
    """A gateway that accepts any IDENTIFY with the right token and can dispatch events."""

    bot_user: dict[str, Any]
    bot_token: str
    url: str = ""
    identifies: list[dict[str, Any]] = field(default_factory=list)
    resumes: list[dict[str, Any]] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    _sockets: list[web.WebSocketResponse] = field(default_factory=list)
    _sequence: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send a DISPATCH (op 0) to every identified connection."""
        await self.ready.wait()
        for ws in list(self._sockets):
            await ws.send_json({"op": 0, "t": event, "s": next(self._sequence), "d": data})

    async def ask_to_reconnect(self) -> None:
        """Send RECONNECT (op 7), as Discord does before moving a session: the client should
        come back and RESUME rather than IDENTIFY again."""
        for ws in list(self._sockets):
            self._sockets.remove(ws)
            await ws.send_json({"op": 7, "d": None, "s": None, "t": None})

    @property
    def connected(self) -> int:
        """Connections that identified or resumed and are still open."""
        return len(self._sockets)

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"op": 10, "d": {"heartbeat_interval": 41250}, "s": None, "t": None})
        try:
            async for frame in ws:
                if frame.type is not WSMsgType.TEXT:
                    continue
                message = json.loads(frame.data)
                if message["op"] == 1:  # heartbeat
                    await ws.send_json({"op": 11, "d": None, "s": None, "t": None})
                elif message["op"] == 2:  # identify
                    self.identifies.append(message["d"])
                    if message["d"]["token"] != self.bot_token:
                        await ws.close(code=4004, message=b"Authentication failed.")
                        break
                    self._sockets.append(ws)
                    ready = {
                        "v": 10,
                        "user": self.bot_user,
                        "guilds": [],
                        "session_id": "fake-session",
                        "resume_gateway_url": self.url,
                        "application": {"id": str(APP_ID), "flags": 0},
                    }
                    await ws.send_json({"op": 0, "t": "READY", "s": 0, "d": ready})
                    self.ready.set()
                elif message["op"] == 6:  # resume
                    self.resumes.append(message["d"])
                    known = message["d"]["session_id"] == "fake-session"
                    if message["d"]["token"] != self.bot_token or not known:
                        await ws.send_json({"op": 9, "d": False, "s": None, "t": None})
                        continue
                    self._sockets.append(ws)
                    resumed = {"op": 0, "t": "RESUMED", "s": next(self._sequence), "d": {}}
                    await ws.send_json(resumed)
        finally:
            if ws in self._sockets:
                self._sockets.remove(ws)
        return ws


@contextlib.asynccontextmanager
async def running_fake_gateway(fake: FakeDiscord) -> AsyncIterator[FakeGateway]:
    """A gateway for `fake`'s bot, served by aiohttp on an ephemeral loopback port."""
    gateway = FakeGateway(fake.bot_user(), fake.bot_token)
    app = web.Application()
    app.router.add_get("/", gateway.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = bind_socket()
    gateway.url = socket_url(sock).replace("http://", "ws://") + "/"
    await web.SockSite(runner, sock).start()
    try:
        yield gateway
    finally:
        await runner.cleanup()
