"""Conjure with its Discord adapter, end to end on loopback: the sandbox, a fake Discord, the app.

The client really logs in to the fake (which syncs the commands), and interactions reach it as
real INTERACTION_CREATE payloads through discord.py's own parser, exactly as the gateway hands
them over. With `gateway=True` the platform starts as `conjure serve` starts it and the payloads
travel over a fake gateway's websocket instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import discord
from starlette.routing import BaseRoute

from adapters.discord.adapter import DiscordAdapter
from adapters.platforms import run_platform, start_platforms
from adapters.running import RunningPlatform
from bot.app import create_app
from bot.leadership import Leadership
from bot.runtime import Runtime
from bot.serving import bind_socket, serve_app, socket_url
from tests.fakes.discord_api import (
    APP_ID,
    FakeDiscord,
    FakeGateway,
    running_fake_discord,
    running_fake_gateway,
)
from tests.harness import make_settings

GUILD_ID = 1_100_000_000_000_000_001
CHANNEL_ID = 1_100_000_000_000_000_002
USER_ID = 1_100_000_000_000_000_003
ALERT_CHANNEL_ID = 1_100_000_000_000_000_004
# View Channel, Send Messages, Send Messages in Threads, Attach Files, Read Message History
APP_PERMISSIONS = str(274878008320)
OPTION_TYPES = {bool: 5, int: 4, float: 10, str: 3}


@dataclass(frozen=True)
class UserOption:
    """A USER option's value: Discord sends the ID and the user under data.resolved."""

    id: int
    username: str = "someone"


@dataclass(frozen=True)
class AttachmentOption:
    """An ATTACHMENT option's value (type 11): Discord sends its id, and the attachment (from
    FakeDiscord.host_attachment) under data.resolved.attachments."""

    attachment: dict[str, Any]


@dataclass
class Sent:
    """One dispatched interaction: its payload, and when it was handed to discord.py."""

    payload: dict[str, Any]
    dispatched_at: float

    @property
    def token(self) -> str:
        return self.payload["token"]


@dataclass
class DiscordConjure:
    url: str
    runtime: Runtime
    discord: FakeDiscord
    adapter: DiscordAdapter
    sandbox: Any
    gateway: FakeGateway | None = None

    @property
    def client(self) -> discord.Client:
        return self.adapter.client

    async def interact(
        self,
        command: str,
        options: dict[str, Any] | None = None,
        *,
        subcommand: str | None = None,
        user_id: int = USER_ID,
        attachment_size_limit: int = 10 * 1024 * 1024,
        channel_nsfw: bool = False,
    ) -> Sent:
        """Send one slash command through discord.py and wait for its handler to finish.

        Over the gateway, only until the interaction is answered (the handler may go on).
        """
        payload = interaction_payload(
            self.discord,
            command,
            options or {},
            subcommand=subcommand,
            user_id=user_id,
            attachment_size_limit=attachment_size_limit,
        )
        payload["channel"]["nsfw"] = channel_nsfw  # an age-restricted channel
        self.discord.register_interaction(payload)
        sent = Sent(payload, time.monotonic())
        if self.gateway is not None:
            await self.gateway.dispatch("INTERACTION_CREATE", payload)
            await self.discord.wait_for(
                lambda: self.discord.find("POST", f"/{payload['token']}/callback$")
            )
            return sent
        before = asyncio.all_tasks()
        self.client._connection.parse_interaction_create(payload)  # type: ignore[arg-type]
        started = asyncio.all_tasks() - before  # the tree's invoker, created synchronously
        if started:
            await asyncio.wait_for(asyncio.gather(*started), timeout=20)
        return sent

    async def press(
        self,
        message: dict[str, Any],
        label: str,
        *,
        user_id: int = USER_ID,
        display_name: str = "Fox Lover",
    ) -> Sent:
        """Press the button labelled `label` on `message` (as the fake stores it), as `user_id`,
        through discord.py's own dispatch, and wait for its handler to finish (over the
        gateway, only until the press is answered)."""
        payload = component_payload(
            self.discord, message, custom_id_of(message, label), user_id, display_name
        )
        return await self._dispatch(payload)

    async def _dispatch(self, payload: dict[str, Any]) -> Sent:
        self.discord.register_interaction(payload)
        sent = Sent(payload, time.monotonic())
        if self.gateway is not None:
            await self.gateway.dispatch("INTERACTION_CREATE", payload)
            await self.discord.wait_for(
                lambda: self.discord.find("POST", f"/{payload['token']}/callback$")
            )
            return sent
        before = asyncio.all_tasks()
        self.client._connection.parse_interaction_create(payload)  # type: ignore[arg-type]
        started = asyncio.all_tasks() - before  # the view store's dispatch, made synchronously
        if started:
            await asyncio.wait_for(asyncio.gather(*started), timeout=20)
        return sent

    async def settle(self) -> None:
        """Until the sandbox has sent everything and Conjure has delivered everything."""
        await self.sandbox.sandbox.wait_idle()
        await self.runtime.service.wait_idle()


def interaction_payload(
    fake: FakeDiscord,
    command: str,
    options: dict[str, Any],
    *,
    subcommand: str | None,
    user_id: int,
    attachment_size_limit: int,
) -> dict[str, Any]:
    """An INTERACTION_CREATE for a slash command, shaped as Discord sends it in a guild."""
    interaction_id = discord.utils.time_snowflake(datetime.now(UTC)) + secrets.randbelow(1 << 22)
    synced = [c for scope in fake.commands.values() for c in scope if c["name"] == command]
    data: dict[str, Any] = {
        "id": synced[0]["id"] if synced else str(fake.snowflake()),
        "name": command,
        "type": 1,
        "options": [
            {"name": name, "type": 6, "value": str(value.id)}
            if isinstance(value, UserOption)
            else {"name": name, "type": 11, "value": value.attachment["id"]}
            if isinstance(value, AttachmentOption)
            else {"name": name, "type": OPTION_TYPES[type(value)], "value": value}
            for name, value in options.items()
        ],
    }
    mentioned = [value for value in options.values() if isinstance(value, UserOption)]
    if mentioned:
        data["resolved"] = {
            "users": {
                str(u.id): {
                    "id": str(u.id),
                    "username": u.username,
                    "global_name": None,
                    "discriminator": "0",
                    "avatar": None,
                    "public_flags": 0,
                }
                for u in mentioned
            }
        }
    attached = [
        value.attachment for value in options.values() if isinstance(value, AttachmentOption)
    ]
    if attached:
        data.setdefault("resolved", {})["attachments"] = {a["id"]: a for a in attached}
    if synced and "guild_id" in synced[0]:
        data["guild_id"] = synced[0]["guild_id"]
    if subcommand is not None:
        data["options"] = [{"name": subcommand, "type": 1, "options": data["options"]}]
    user = {
        "id": str(user_id),
        "username": "fox-lover",
        "global_name": "Fox Lover",
        "discriminator": "0",
        "avatar": None,
        "public_flags": 0,
    }
    return {
        "id": str(interaction_id),
        "application_id": str(APP_ID),
        "type": 2,
        "data": data,
        "guild_id": str(GUILD_ID),
        "guild": {"id": str(GUILD_ID), "locale": "en-US", "features": []},
        "channel_id": str(CHANNEL_ID),
        "channel": {
            "id": str(CHANNEL_ID),
            "type": 0,
            "guild_id": str(GUILD_ID),
            "name": "art",
            "position": 0,
            "permission_overwrites": [],
            "nsfw": False,
            "parent_id": None,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "flags": 0,
            "permissions": "2248473465835073",
        },
        "member": {
            "user": user,
            "roles": [],
            "joined_at": "2024-01-01T00:00:00+00:00",
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "nick": None,
            "avatar": None,
            "premium_since": None,
            "communication_disabled_until": None,
            "permissions": "2248473465835073",
        },
        "token": "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(48),
        "version": 1,
        "app_permissions": APP_PERMISSIONS,
        "locale": "en-US",
        "guild_locale": "en-US",
        "entitlements": [],
        "authorizing_integration_owners": {"0": str(GUILD_ID)},
        "context": 0,
        "attachment_size_limit": attachment_size_limit,
    }


def serve_env(fake: FakeDiscord, gateway: FakeGateway) -> dict[str, str]:
    """The environment that points a `conjure serve` process at the fake Discord and gateway."""
    return {
        "DISCORD_TOKEN": fake.bot_token,
        "DISCORD_API_URL": fake.api_url,
        "DISCORD_GATEWAY_URL": gateway.url,
        "DISCORD_GUILD_ID": str(GUILD_ID),
    }


async def imagine_over_gateway(
    fake: FakeDiscord, gateway: FakeGateway, prompt: str, *, timeout: float = 30
) -> dict[str, Any]:
    """/imagine `prompt` sent as Discord would, over the gateway to a `conjure serve` process;
    its original response once it holds the image."""
    payload = interaction_payload(
        fake,
        "imagine",
        {"prompt": prompt},
        subcommand=None,
        user_id=USER_ID,
        attachment_size_limit=10 * 1024 * 1024,
    )
    fake.register_interaction(payload)
    await asyncio.wait_for(gateway.dispatch("INTERACTION_CREATE", payload), timeout=timeout)
    return await fake.wait_for(
        lambda: (m := fake.original(payload["token"])) and m["attachments"] and m,
        timeout=timeout,
    )


def buttons(message: dict[str, Any]) -> list[list[str]]:
    """The labels of a message's buttons, row by row, as a person sees them."""
    return [
        [c["label"] for c in row["components"] if c["type"] == 2]
        for row in message.get("components") or []
    ]


def button_styles(message: dict[str, Any]) -> dict[str, int]:
    """Each button's style by label (1 primary, 2 secondary, 4 danger)."""
    return {
        c["label"]: c["style"]
        for row in message.get("components") or []
        for c in row["components"]
        if c["type"] == 2
    }


def custom_id_of(message: dict[str, Any], label: str) -> str:
    [custom_id] = [
        c["custom_id"]
        for row in message.get("components") or []
        for c in row["components"]
        if c.get("label") == label
    ]
    return custom_id


def component_payload(
    fake: FakeDiscord,
    message: dict[str, Any],
    custom_id: str,
    user_id: int = USER_ID,
    display_name: str = "Fox Lover",
) -> dict[str, Any]:
    """An INTERACTION_CREATE for a button press (type 3): `data.component_type` 2 and the
    button's `custom_id`, and the message the button is on as Discord sends it, with its
    attachments and components."""
    payload = interaction_payload(
        fake,
        "-",
        {},
        subcommand=None,
        user_id=user_id,
        attachment_size_limit=10 * 1024 * 1024,
    )
    payload["type"] = 3
    payload["data"] = {"component_type": 2, "custom_id": custom_id}
    payload["message"] = fake.as_sent(message)
    payload["member"]["user"]["global_name"] = display_name
    return payload


@contextlib.asynccontextmanager
async def running_discord_conjure(
    sandbox: Any,
    database_url: str,
    *,
    guild: bool = True,
    progress_interval: float = 2.0,
    gateway: bool = False,
    fake: FakeDiscord | None = None,
    leadership: Leadership | None = None,
    **extra: Any,
) -> AsyncIterator[DiscordConjure]:
    """The real app and the Discord platform, logged in to a fake Discord, on `sandbox`.

    Pass `fake` to log in to one already running: a restart, or a second instance, sees the
    messages the first one made. With `leadership` (and `gateway`), the gateway, recovery and
    the sweeper are the leader's duties, as under `conjure serve`."""
    async with contextlib.AsyncExitStack() as stack:
        if fake is None:
            fake = await stack.enter_async_context(running_fake_discord())
        fake_gateway = None
        if gateway:
            fake_gateway = await stack.enter_async_context(running_fake_gateway(fake))
        sock = bind_socket()
        settings = make_settings(
            sandbox,
            database_url,
            public_url=socket_url(sock),
            discord_token=fake.bot_token,
            discord_api_url=fake.api_url,
            discord_gateway_url=fake_gateway.url if fake_gateway else "ws://127.0.0.1:9/",
            discord_guild_id=GUILD_ID if guild else None,
            **extra,
        )
        runtime = await Runtime.start(settings, progress_interval=progress_interval)
        runtime.leadership = leadership
        platform = (
            start_platforms(runtime)  # exactly as `conjure serve` does
            if gateway
            else _routes_of(run_platform(runtime, "discord", connect_gateway=False))
        )
        try:
            async with platform as routes:
                adapter = runtime.service.adapters["discord"]
                assert isinstance(adapter, DiscordAdapter)
                async with serve_app(create_app(runtime, routes), sock=sock) as url:
                    yield DiscordConjure(url, runtime, fake, adapter, sandbox, fake_gateway)
        finally:
            await runtime.aclose()


@contextlib.asynccontextmanager
async def _routes_of(
    platform: contextlib.AbstractAsyncContextManager[RunningPlatform],
) -> AsyncIterator[list[BaseRoute]]:
    async with platform as running:
        yield running.routes
