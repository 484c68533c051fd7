"""Start the chat platforms whose credentials are configured; the others are simply not started.

Each platform module offers one async context manager taking the Runtime: it registers its
adapter with the job service, starts whatever it needs (a Socket Mode connection, a Discord
gateway client) and yields the HTTP routes it serves, stopping everything on exit.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.routing import BaseRoute

from bot.config import Settings
from bot.runtime import Runtime


def configured_platforms(settings: Settings) -> list[str]:
    """The platforms whose credentials are set."""
    platforms = []
    if settings.slack_bot_token and (settings.slack_signing_secret or settings.slack_app_token):
        platforms.append("slack")
    if settings.discord_token:
        platforms.append("discord")
    return platforms


@contextlib.asynccontextmanager
async def start_platforms(runtime: Runtime) -> AsyncIterator[list[BaseRoute]]:
    """Run every configured platform for the duration of the block; yields their routes."""
    routes: list[BaseRoute] = []
    async with contextlib.AsyncExitStack() as stack:
        for platform in configured_platforms(runtime.settings):
            if platform == "slack":
                from adapters.slack.lifecycle import slack_platform

                routes += await stack.enter_async_context(slack_platform(runtime))
            elif platform == "discord":
                from adapters.discord.adapter import discord_platform

                routes += await stack.enter_async_context(discord_platform(runtime))
        yield routes
