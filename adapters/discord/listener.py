"""What Discord's slash commands call: an interaction in, the core's Reply out.

Discord gives 3 seconds for the first response. A job command is deferred publicly when the
core acknowledges it (valid, before anything slow), and the deferred response then becomes the
job's status message; bad input and refusals are answered privately. `/conjure` is deferred
privately at once, since its answers read the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

import discord

from adapters.discord import markup
from adapters.discord.adapter import (
    ALREADY_ACKNOWLEDGED,
    DEFER_BY,
    PLATFORM,
    DiscordAdapter,
    answer_privately,
    defer_publicly,
    defer_thinking,
)
from adapters.discord.attachments import DISCORD_CDN_HOSTS, with_files
from adapters.discord.buttons import reply_view
from adapters.discord.destination import destination_of
from bot.adapter import CommandRequest
from bot.catalog import CommandSpec
from bot.commands.handler import Commands
from bot.inputs import InputFile

log = logging.getLogger(__name__)

T = TypeVar("T")
_A_COPY = object()  # what _first_response returns for a copy of an interaction


class InteractionListener:
    """Runs slash commands through the core; the command tree calls these two."""

    def __init__(
        self,
        commands: Commands,
        adapter: DiscordAdapter,
        file_hosts: tuple[str, ...] = DISCORD_CDN_HOSTS,
    ) -> None:
        self.commands = commands
        self.adapter = adapter
        self.file_hosts = file_hosts  # where attachment options may be read from

    async def run_command(
        self,
        interaction: discord.Interaction,
        spec: CommandSpec,
        prompt: str,
        options: dict[str, Any],
    ) -> None:
        """A catalog command: deferred once valid, then started; or a private answer.

        A command with a file is deferred at once: reading the file may take longer than
        Discord's 3 seconds, and a refusal then replaces the "thinking" with a private answer.
        Any other is deferred anyway if the core has not acknowledged it shortly before that
        deadline (a database slow to record its job), as a press is."""
        options = with_files(options, self.file_hosts)
        early: list[Any] = []
        if any(isinstance(value, InputFile) for value in options.values()):
            deferred = await _first_response(defer_publicly(interaction))
            if deferred is _A_COPY:
                return
            early.append(deferred)
        deferring = asyncio.Lock()

        async def acknowledge() -> dict[str, Any]:
            async with deferring:
                if not early:
                    early.append(await defer_publicly(interaction))
            deferred = early[0]
            message_id = deferred.message_id if deferred else None
            return {"message_id": str(message_id)} if message_id else {}

        async def defer_before_the_deadline() -> None:
            await asyncio.sleep(DEFER_BY)
            await acknowledge()

        request = _request(interaction, spec.name, prompt, options)
        in_time = asyncio.create_task(defer_before_the_deadline())
        try:
            with self.adapter.submitting(interaction):
                reply = await self.commands.handle(request, acknowledge)
        finally:
            if not deferring.locked():  # still waiting: not needed; else let it land
                in_time.cancel()
            with contextlib.suppress(asyncio.CancelledError, discord.HTTPException, TimeoutError):
                await in_time
        if reply.text is None:
            if early and reply.job is None:  # a copy sent again: its first copy answers
                with contextlib.suppress(discord.HTTPException):
                    await interaction.delete_original_response()
            return
        text = markup.fit(markup.render(reply.text))
        view = reply_view(reply.buttons)  # the price question's Run it and Cancel
        if interaction.response.is_done():
            await answer_privately(interaction, text, view)
        elif view is not None:
            await interaction.response.send_message(text, ephemeral=True, view=view)
        else:
            await interaction.response.send_message(text, ephemeral=True)

    async def run_conjure(self, interaction: discord.Interaction, text: str) -> None:
        """`/conjure <text>`: answered privately, by the same code as every platform."""
        if await _first_response(defer_thinking(interaction, ephemeral=True)) is _A_COPY:
            return
        reply = await self.commands.handle(_request(interaction, "conjure", text, None))
        answer = markup.render(reply.text) if reply.text else ""
        first, *rest = markup.split_text(answer)
        await interaction.edit_original_response(content=first)
        for chunk in rest:
            await interaction.followup.send(chunk, ephemeral=True)


async def _first_response(response: Awaitable[T]) -> T | object:
    """The interaction's first response, or `_A_COPY` when Discord says it has one already:
    this is a copy of an interaction (a gateway RESUME may replay it) whose first copy answers
    it. Such a copy logged an ERROR with a traceback and tried to say "Something went wrong"."""
    try:
        return await response
    except discord.HTTPException as exc:
        if exc.code != ALREADY_ACKNOWLEDGED:
            raise
    log.info("a copy of a Discord interaction already answered; ignored")
    return _A_COPY


def _request(
    interaction: discord.Interaction, command: str, text: str, options: dict[str, Any] | None
) -> CommandRequest:
    return CommandRequest(
        platform=PLATFORM,
        workspace=str(interaction.guild_id or "dm"),
        channel=str(interaction.channel_id),
        user_id=str(interaction.user.id),
        user_name=interaction.user.display_name,
        command=command,
        text=text,
        options=options,
        destination=destination_of(interaction, None),
        request_key=f"{PLATFORM}:{interaction.id}",  # the same however often it is delivered
    )
