"""Discord for the fault benches: the fake REST API and gateway of the tests, in this process,
with `conjure serve` connected to them as tests/test_serve_process.py connects it.

Commands arrive as INTERACTION_CREATE over the gateway; a result is counted by the messages
carrying attachments that a person would see for their command: the interaction's original
response, and any follow-up or channel post that mentions them.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from tests.discord_harness import GUILD_ID, interaction_payload
from tests.fakes.discord_api import (
    FakeDiscord,
    FakeGateway,
    running_fake_discord,
    running_fake_gateway,
)

ATTACHMENT_LIMIT = 10 * 1024 * 1024


@dataclass
class DiscordSide:
    """The fake Discord and its gateway, and which interaction token was whose."""

    fake: FakeDiscord
    gateway: FakeGateway
    tokens: dict[str, str] = field(default_factory=dict)  # interaction token -> user id

    @property
    def env(self) -> dict[str, str]:
        """What `conjure serve` needs to reach this Discord."""
        return {
            "DISCORD_TOKEN": self.fake.bot_token,
            "DISCORD_API_URL": self.fake.api_url,
            "DISCORD_GATEWAY_URL": self.gateway.url,
            "DISCORD_GUILD_ID": str(GUILD_ID),
        }

    def synced(self) -> bool:
        """Connected, and the commands synced (an interaction names a synced command)."""
        return self.gateway.connected > 0 and bool(self.fake.commands)

    async def imagine(self, user_id: int, prompt: str) -> None:
        """An `/imagine` from `user_id`, dispatched over the gateway."""
        payload = interaction_payload(
            self.fake,
            "imagine",
            {"prompt": prompt},
            subcommand=None,
            user_id=user_id,
            attachment_size_limit=ATTACHMENT_LIMIT,
        )
        self.fake.register_interaction(payload)
        self.tokens[payload["token"]] = str(user_id)
        await self.gateway.dispatch("INTERACTION_CREATE", payload)

    def results(self) -> dict[str, int]:
        """Messages with attachments per user: what each person was posted."""
        seen: dict[str, set[str]] = {}
        for token, user in self.tokens.items():
            original = self.fake.original(token)
            if original is not None and original.get("attachments"):
                seen.setdefault(user, set()).add(str(original["id"]))
        users = set(self.tokens.values())
        for message in self.fake.messages.values():
            if not message.get("attachments"):
                continue
            for user in _mentions(str(message.get("content") or "")) & users:
                seen.setdefault(user, set()).add(str(message["id"]))
        return {user: len(ids) for user, ids in seen.items()}


def _mentions(content: str) -> set[str]:
    found: set[str] = set()
    start = content.find("<@")
    while start >= 0:
        end = content.find(">", start)
        if end < 0:
            break
        found.add(content[start + 2 : end].lstrip("!"))
        start = content.find("<@", end)
    return found


@contextlib.asynccontextmanager
async def running_discord() -> AsyncIterator[DiscordSide]:
    """The fake Discord (REST on loopback) and its gateway, for the life of the block."""
    async with running_fake_discord() as fake, running_fake_gateway(fake) as gateway:
        yield DiscordSide(fake, gateway)


def outage_paths() -> str:
    """The REST routes a delivery uses: webhook edits and follow-ups, channel posts."""
    return r"^/(webhooks|channels)/"


def describe(side: DiscordSide) -> dict[str, Any]:
    """A few counters for the report."""
    failed = [c for c in side.fake.calls if c.status >= 400]
    return {"calls": len(side.fake.calls), "failed_calls": len(failed)}
