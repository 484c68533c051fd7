"""Aim discord.py at the configured Discord URLs.

discord.py has no setting for its REST base URL or its gateway: both are class attributes
(`discord.http.Route.BASE`, and `DiscordWebSocket.DEFAULT_GATEWAY`, which a plain `Client` uses
without asking REST for the gateway). DISCORD_API_URL and DISCORD_GATEWAY_URL (a proxy, or the
loopback fakes the tests run against) are therefore set there, process-wide, and put back when
the platform stops.
"""

from __future__ import annotations

from collections.abc import Callable

import discord
import yarl
from discord.gateway import DiscordWebSocket

from bot.config import Settings


def point_discord_py(settings: Settings) -> Callable[[], None]:
    """Aim discord.py's REST and gateway at the configured URLs; returns the undo."""
    base, gateway = discord.http.Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = str(settings.discord_api_url).rstrip("/")
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord_gateway_url)

    def undo() -> None:
        discord.http.Route.BASE = base
        DiscordWebSocket.DEFAULT_GATEWAY = gateway

    return undo
