"""Discord for `conjure serve`: a gateway client whose command tree runs the catalog's commands.

`running` is what adapters/platforms.py enters when DISCORD_TOKEN is set. It logs in (a wrong
token stops start-up with a plain message), syncs the slash commands, and runs the gateway
connection in this event loop, since discord.py receives interactions over the gateway only.
Under `conjure serve` the sync and the gateway are the leader's (bot.leadership): two gateway
connections would each receive the same interactions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import discord

from adapters.discord.adapter import DiscordAdapter
from adapters.discord.attachments import attachment_hosts
from adapters.discord.buttons import FollowupButton, PressHandler
from adapters.discord.command_tree import ConjureTree, build_commands
from adapters.discord.listener import InteractionListener
from adapters.discord.presses import PressListener
from adapters.discord.route_patch import point_discord_py
from adapters.running import RunningPlatform
from bot.config import ConfigError
from bot.runtime import Runtime

log = logging.getLogger(__name__)


class ConjureClient(discord.Client):
    """A gateway client with the command tree; syncs the commands when it logs in. Presses of
    Conjure's buttons go to `presses` (see adapters.discord.buttons)."""

    presses: PressHandler | None = None

    def __init__(self, guild_id: int | None, sync_on_login: bool = True) -> None:
        discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False  # no voice here
        # Interactions need no intent; `guilds` (not privileged) keeps discord.py's cache sane.
        super().__init__(
            intents=discord.Intents(guilds=True),
            allowed_mentions=discord.AllowedMentions.none(),  # a prompt may say @everyone
        )
        self.tree = ConjureTree(self)
        self.guild = discord.Object(guild_id) if guild_id else None
        self.sync_on_login = sync_on_login
        self.synced = False

    async def setup_hook(self) -> None:
        if self.sync_on_login:
            await self.sync_commands()

    async def sync_commands(self) -> None:
        """Publish the slash commands (once per process; a failure is logged, not raised)."""
        if self.synced:
            return
        self.synced = True
        where = f"guild {self.guild.id}" if self.guild else "all guilds (may take up to an hour)"
        try:
            synced = await self.tree.sync(guild=self.guild)
        except discord.HTTPException as exc:
            # Usually the bot was invited without the applications.commands scope.
            log.error("could not sync slash commands to %s: %s", where, exc)
            return
        log.info("synced %d slash commands to %s", len(synced), where)


@contextlib.asynccontextmanager
async def running(
    runtime: Runtime, *, connect_gateway: bool = True
) -> AsyncIterator[RunningPlatform]:
    """Log in (which syncs the commands), run the gateway in this loop, close on exit.

    Discord reaches the bot over the gateway only, so no HTTP routes are yielded. Tests pass
    `connect_gateway=False` and feed interactions to the client themselves.
    """
    token = runtime.settings.discord_token
    if token is None:
        raise ConfigError("DISCORD_TOKEN: not set (README: Set up in Discord)")
    undo = point_discord_py(runtime.settings)
    leadership = runtime.leadership if connect_gateway else None
    # Under a leadership lock only the leader syncs and connects; every process logs in, since
    # posting results goes through the REST API, which any of them may use.
    client = ConjureClient(runtime.settings.discord_guild_id, sync_on_login=leadership is None)
    adapter = DiscordAdapter(client, runtime.catalog)
    hosts = attachment_hosts(str(runtime.settings.discord_api_url))
    listener = InteractionListener(runtime.commands, adapter, hosts)
    for command in build_commands(runtime.catalog, listener):
        client.tree.add_command(command, guild=client.guild)
    # Buttons are matched by their custom_id's template, with no view kept: a press on any
    # message, made by this process or another, before a restart or after, lands here.
    client.presses = PressListener(
        runtime.followups, adapter, runtime.settings.conjure_max_download_bytes
    )
    client.add_dynamic_items(FollowupButton)
    gateway: asyncio.Task[None] | None = None
    try:
        try:
            await client.login(token.get_secret_value())
        except discord.LoginFailure:
            raise ConfigError(
                "DISCORD_TOKEN: Discord rejected the token; copy it again from the Developer "
                "Portal (your application, Bot, Reset Token)"
            ) from None
        if leadership is not None:
            leadership.add_duty("the Discord gateway", lambda: _lead_gateway(client))
        elif connect_gateway:
            gateway = asyncio.create_task(client.connect(reconnect=True), name="discord-gateway")
            gateway.add_done_callback(_gateway_stopped)
        yield RunningPlatform(adapter)
    finally:
        await client.close()
        if gateway is not None:
            gateway.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await gateway
        undo()


def _gateway_stopped(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the Discord gateway connection stopped", exc_info=task.exception())


async def _lead_gateway(client: ConjureClient) -> None:
    """The leader's gateway: sync the commands, connect, and disconnect (only the gateway, the
    REST session stays) when leadership is lost."""
    await client.sync_commands()
    try:
        await client.connect(reconnect=True)
    finally:
        if client.ws is not None and not client.is_closed():
            with contextlib.suppress(Exception):
                await client.ws.close(code=1000)
