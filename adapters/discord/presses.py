"""What a press of one of Conjure's buttons does on Discord: a component interaction in, the
core's Reply out, as the slash-command listener does for commands.

Discord gives 3 seconds for the first response. Re-roll, U and V start a job: the press is
deferred publicly ("thinking") once the core has recorded it, and that deferred response
becomes the new job's message, in the same channel, naming who pressed. Reading and sending
the image of a U or V can take a while, so the press is deferred anyway if that has not happened
shortly before the deadline. Cancel changes the job's own message: it is deferred silently at
once, and only a refusal is said, privately.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mimetypes
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp
import discord

from adapters.discord import markup
from adapters.discord.adapter import (
    DEFER_BY,
    PLATFORM,
    DiscordAdapter,
    answer_privately,
    defer_publicly,
    defer_update,
)
from adapters.discord.buttons import reply_view
from adapters.discord.destination import destination_of
from bot.adapter import OutputFile, Reply
from bot.followups.buttons import Action, parse_custom_id
from bot.followups.service import Followups, OutputSource, Press
from bot.replicate.outputs import OutputUnavailable, split_output
from storage.models import Job

log = logging.getLogger(__name__)

ATTACHMENT_DEADLINE = 60.0  # seconds to read one attachment back, as for any download


class PressListener:
    """Answers presses of Conjure's buttons through the core's follow-ups (the client's
    `presses`, called by adapters.discord.buttons.FollowupButton)."""

    def __init__(self, followups: Followups, adapter: DiscordAdapter, max_image_bytes: int) -> None:
        self.followups = followups
        self.adapter = adapter
        self.max_image_bytes = max_image_bytes

    async def on_press(self, interaction: discord.Interaction, custom_id: str) -> None:
        button = parse_custom_id(custom_id)
        if button is not None and button.action is Action.CANCEL:
            await self._cancel(interaction, custom_id)
        elif button is not None and button.action is Action.DECLINE:
            await self._decline(interaction, custom_id)
        else:
            await self._follow_up(interaction, custom_id)

    async def _cancel(self, interaction: discord.Interaction, custom_id: str) -> None:
        """Deferred without a word: the job's own message then says canceled, without its
        Cancel. The pressed message loses its Cancel at once too, through this press's token,
        since the job's own token dies after 15 minutes (its "canceled" is then a reply in the
        channel). A refusal is told to the presser only."""
        await defer_update(interaction)
        reply = await self.followups.press(self._press(interaction, custom_id))
        if reply.text is not None:
            await interaction.followup.send(_text(reply), ephemeral=True)
        elif not reply.refused:
            with contextlib.suppress(discord.HTTPException):
                await interaction.edit_original_response(view=None)

    async def _decline(self, interaction: discord.Interaction, custom_id: str) -> None:
        """Cancel on a price question (private, so only its person can press it): the question
        becomes the answer, its buttons gone. Deferred silently first, as Cancel is: the
        answer waits for the database, which may take longer than Discord's 3 seconds."""
        await defer_update(interaction)
        reply = await self.followups.press(self._press(interaction, custom_id))
        text = _text(reply) if reply.text is not None else ""
        await interaction.edit_original_response(content=text or None, view=None)

    async def _follow_up(self, interaction: discord.Interaction, custom_id: str) -> None:
        """A new job whose message is this press's deferred response; or a private answer."""
        deferring = asyncio.Lock()
        deferred: dict[str, Any] = {}

        async def defer() -> dict[str, Any]:
            async with deferring:
                if not interaction.response.is_done():
                    response = await defer_publicly(interaction)
                    message_id = response.message_id if response else None
                    if message_id:
                        deferred["message_id"] = str(message_id)
            return dict(deferred)

        async def defer_before_the_deadline() -> None:
            await asyncio.sleep(DEFER_BY)
            await defer()

        early = asyncio.create_task(defer_before_the_deadline())
        try:
            with self.adapter.submitting(interaction):
                reply = await self.followups.press(self._press(interaction, custom_id), defer)
        finally:
            if not deferring.locked():  # still waiting: not needed; else let it land
                early.cancel()
            with contextlib.suppress(asyncio.CancelledError, discord.HTTPException, TimeoutError):
                await early
        if reply.job is not None:
            return  # its message is the deferred response
        view = reply_view(reply.buttons)  # a Re-roll's price question: Run it, Cancel
        if interaction.response.is_done():  # deferred early: take the "thinking" back
            if reply.text is not None:
                await answer_privately(interaction, _text(reply), view)
            else:
                with contextlib.suppress(discord.HTTPException):
                    await interaction.delete_original_response()
        elif reply.text is not None and view is not None:
            await interaction.response.send_message(_text(reply), ephemeral=True, view=view)
        elif reply.text is not None:
            await interaction.response.send_message(_text(reply), ephemeral=True)
        else:
            await interaction.response.defer()  # a double press: its first one speaks

    def _press(self, interaction: discord.Interaction, custom_id: str) -> Press:
        return Press(
            platform=PLATFORM,
            workspace=str(interaction.guild_id or "dm"),
            channel=str(interaction.channel_id),
            user_id=str(interaction.user.id),
            custom_id=custom_id,
            user_name=interaction.user.display_name,
            destination=destination_of(interaction, None),
            source=attachment_source(interaction.message, self.max_image_bytes),
        )


def attachment_source(message: discord.Message | None, max_bytes: int) -> OutputSource:
    """Output n of a job as attached to `message`, the one the button is on: the component
    interaction carries it with fresh attachment URLs, which outlive Replicate's hour. A CDN
    that fails for now (5xx, 429, a timeout) raises OutputUnavailable: the image is not gone."""

    async def source(job: Job, n: int) -> OutputFile | None:
        attachment = _attachment_of(message, job, n) if message is not None else None
        if attachment is None:
            return None
        if attachment.size > max_bytes:
            log.info("job %s: attachment %d is over %d bytes", job.id, n, max_bytes)
            return None
        try:
            async with asyncio.timeout(ATTACHMENT_DEADLINE):
                content = await attachment.read()
        except (discord.NotFound, discord.Forbidden) as exc:
            log.info("job %s: attachment %d gone (%r)", job.id, n, exc)
            return None
        except (discord.HTTPException, aiohttp.ClientError, TimeoutError) as exc:
            log.info("job %s: attachment %d unreadable for now (%r)", job.id, n, exc)
            raise OutputUnavailable(f"attachment {n} of job {job.id} unreadable") from exc
        if len(content) > max_bytes:
            return None
        content_type = _content_type(attachment)
        return OutputFile(attachment.filename, content, content_type, attachment.url)

    return source


def _attachment_of(message: discord.Message, job: Job, n: int) -> discord.Attachment | None:
    """The attachment that is output n: by its file name, as outputs are uploaded under the
    last part of their URL; else the n-th image, when every output was attached (a file too
    big for the message is linked instead, which shifts the rest)."""
    images = [a for a in message.attachments if _content_type(a).startswith("image/")]
    urls, _ = split_output(job.output)
    if not 0 < n <= len(urls):
        return None
    name = unquote(urlsplit(urls[n - 1]).path.rsplit("/", 1)[-1])
    named = [a for a in images if a.filename == name]
    if len(named) == 1:
        return named[0]
    if not named and len(images) == len(urls):
        return images[n - 1]
    return None


def _content_type(attachment: discord.Attachment) -> str:
    given = (attachment.content_type or "").split(";")[0].strip()
    if given and given != "application/octet-stream":
        return given
    return mimetypes.guess_type(attachment.filename)[0] or "application/octet-stream"


def _text(reply: Reply) -> str:
    assert reply.text is not None
    return markup.fit(markup.render(reply.text))
