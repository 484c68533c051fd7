"""Discord: slash commands over the gateway, each job shown by editing its interaction's response.

An interaction is deferred at once ("Conjure is thinking..."); that response then shows the
status, progress and finally the result with the files attached. Interaction tokens die after
15 minutes, so a job that outlives its token is posted by the bot in the channel, as a reply to
that response. Everything needed to reach the message again lives in `job.destination`, so a
restarted process can still deliver. (This module is not called `discord.py`: that would shadow
the library.)
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import discord
import yarl
from discord import app_commands
from discord.gateway import DiscordWebSocket
from starlette.routing import BaseRoute

from adapters.discord.command_tree import build_commands
from bot.adapter import CommandRequest, JobResult, OutputFile
from bot.catalog import CommandSpec
from bot.commands.conjure import run_conjure_command
from bot.commands.parsing import UsageError, parse_options
from bot.config import ConfigError, Settings
from bot.jobs import CommandRefused, JobService
from bot.messages import status_text
from bot.runtime import Runtime
from storage.models import Job, utcnow

log = logging.getLogger(__name__)

PLATFORM = "discord"
TOKEN_LIFETIME = timedelta(minutes=15)
TOKEN_MARGIN = timedelta(seconds=20)  # don't start a token call that may land after expiry
MESSAGE_LIMIT = 2000  # characters of content per message
MAX_ATTACHMENTS = 10  # files per message
DEFAULT_ATTACHMENT_LIMIT = 10 * 1024 * 1024
UPLOAD_OVERHEAD = 64 * 1024  # room for the message itself and the multipart framing
PROMPT_SHOWN = 300  # characters of the prompt repeated in the status
DEAD_TOKEN_CODES = {50027, 10015, 10008}  # invalid webhook token, unknown webhook/message
ORIGINAL: Any = "@original"  # discord.py types message ids as int; Discord takes this alias
SORRY = "Something went wrong on Conjure's side; please try again in a minute."


@dataclass(frozen=True)
class Destination:
    """Where a job's messages go, as kept in `job.destination` (JSON: ids as strings)."""

    application_id: int
    token: str
    channel_id: int
    guild_id: int | None
    message_id: int | None  # the original response, once known
    created_at: datetime  # the interaction's; its token lives 15 minutes from here
    attachment_size_limit: int

    @classmethod
    def of(cls, job: Job) -> Destination:
        d = job.destination
        return cls(
            application_id=int(d["application_id"]),
            token=d["token"],
            channel_id=int(d["channel_id"]),
            guild_id=int(d["guild_id"]) if d.get("guild_id") else None,
            message_id=int(d["message_id"]) if d.get("message_id") else None,
            created_at=datetime.fromisoformat(d["created_at"]),
            attachment_size_limit=int(d.get("attachment_size_limit") or DEFAULT_ATTACHMENT_LIMIT),
        )

    def token_alive(self, now: datetime) -> bool:
        return now < self.created_at + TOKEN_LIFETIME - TOKEN_MARGIN


def destination_of(interaction: discord.Interaction, message_id: int | None) -> dict[str, Any]:
    return {
        "application_id": str(interaction.application_id),
        "token": interaction.token,
        "interaction_id": str(interaction.id),
        "channel_id": str(interaction.channel_id),
        "guild_id": str(interaction.guild_id) if interaction.guild_id else None,
        "message_id": str(message_id) if message_id else None,
        "created_at": interaction.created_at.isoformat(),
        "attachment_size_limit": interaction.filesize_limit or DEFAULT_ATTACHMENT_LIMIT,
    }


class ConjureTree(app_commands.CommandTree):
    """The command tree; failures outside our handlers still get a plain answer."""

    async def on_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        log.error("Discord command failed", exc_info=error)
        with contextlib.suppress(discord.HTTPException):
            if interaction.response.is_done():
                await interaction.followup.send(SORRY, ephemeral=True)
            else:
                await interaction.response.send_message(SORRY, ephemeral=True)


class ConjureClient(discord.Client):
    """A gateway client with the command tree; syncs the commands when it logs in."""

    def __init__(self, guild_id: int | None) -> None:
        discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False  # no voice here
        # Interactions need no intent; `guilds` (not privileged) keeps discord.py's cache sane.
        super().__init__(
            intents=discord.Intents(guilds=True),
            allowed_mentions=discord.AllowedMentions.none(),  # a prompt may say @everyone
        )
        self.tree = ConjureTree(self)
        self.guild = discord.Object(guild_id) if guild_id else None

    async def setup_hook(self) -> None:
        where = f"guild {self.guild.id}" if self.guild else "all guilds (may take up to an hour)"
        try:
            synced = await self.tree.sync(guild=self.guild)
        except discord.HTTPException as exc:
            # Usually the bot was invited without the applications.commands scope.
            log.error("could not sync slash commands to %s: %s", where, exc)
            return
        log.info("synced %d slash commands to %s", len(synced), where)


class DiscordAdapter:
    """Runs slash commands and shows each job on its interaction's response message."""

    platform = PLATFORM

    def __init__(self, client: discord.Client, service: JobService) -> None:
        self.client = client
        self.service = service
        self.clock: Callable[[], datetime] = utcnow  # replaceable, to test token expiry
        self._live: dict[str, discord.Interaction] = {}  # token -> interaction being submitted

    # ---- commands ---------------------------------------------------------------------

    async def run_command(
        self,
        interaction: discord.Interaction,
        spec: CommandSpec,
        prompt: str,
        options: dict[str, Any],
    ) -> None:
        """Validate (pure, so before deferring), defer, then submit the job."""
        try:
            invocation = parse_options(spec, self.service.catalog, prompt, options)
        except UsageError as exc:
            await interaction.response.send_message(str(exc), ephemeral=True)
            return
        deferred = await interaction.response.defer(thinking=True)
        given = " ".join(
            f"--{name} {value}" for name, value in options.items() if value is not None
        )
        request = CommandRequest(
            platform=PLATFORM,
            workspace=str(interaction.guild_id or "dm"),
            channel=str(interaction.channel_id),
            user_id=str(interaction.user.id),
            user_name=interaction.user.display_name,
            command=spec.name,
            text=f"{prompt} {given}".strip(),
            destination=destination_of(interaction, deferred.message_id if deferred else None),
        )
        self._live[interaction.token] = interaction
        try:
            await self.service.submit(request, invocation)
        except CommandRefused as exc:
            await self._answer_privately(interaction, str(exc))
        except Exception:
            log.exception("/%s failed before its job could start", spec.name)
            await self._answer_privately(interaction, SORRY)
        finally:
            self._live.pop(interaction.token, None)

    async def run_conjure(self, interaction: discord.Interaction, text: str) -> None:
        """`/conjure <text>`: answered privately, by the same code as every platform."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        request = CommandRequest(
            platform=PLATFORM,
            workspace=str(interaction.guild_id or "dm"),
            channel=str(interaction.channel_id),
            user_id=str(interaction.user.id),
            user_name=interaction.user.display_name,
            command="conjure",
            text=text,
        )
        try:
            answer = await run_conjure_command(self.service, request)
        except Exception:
            log.exception("/conjure %s failed", text)
            answer = SORRY
        first, *rest = split_text(answer)
        await interaction.edit_original_response(content=first)
        for chunk in rest:
            await interaction.followup.send(chunk, ephemeral=True)

    async def _answer_privately(self, interaction: discord.Interaction, text: str) -> None:
        """Nothing was created: say so to this person only, and drop the public "thinking"."""
        await interaction.followup.send(text, ephemeral=True)
        with contextlib.suppress(discord.HTTPException):
            await interaction.delete_original_response()

    # ---- ChatAdapter ------------------------------------------------------------------

    async def post_status(self, job: Job) -> dict[str, Any]:
        message = await self._edit_original(job, content=self._status(job))
        return {"message_id": str(message.id)} if message else {}

    async def update_status(self, job: Job) -> None:
        # The terminal status is always followed by post_result or post_error, which show it
        # with the outcome in one edit (one request fewer against the token's rate limit).
        if not job.job_status.terminal:
            await self._edit_original(job, content=self._status(job))

    async def post_result(self, job: Job, result: JobResult) -> None:
        limit = Destination.of(job).attachment_size_limit
        files = list(result.files)
        attach, notes = fit_files(files, limit)
        lines = [self._status(job), *notes, *(f"⚠️ {reason}" for reason in result.skipped)]
        if result.text and len("\n".join(lines)) + 2 + len(result.text) <= MESSAGE_LIMIT:
            lines.append("\n" + result.text)
        elif result.text:  # too long for a message: attach it, with the files
            name = f"{job.command}-{job.id[:8]}.txt"
            attach, notes = fit_files(
                [*files, OutputFile(name, result.text.encode(), "text/plain")], limit
            )
            lines = [self._status(job), *notes, *(f"⚠️ {reason}" for reason in result.skipped)]
            lines.append(f"The answer is {len(result.text):,} characters long; it is in {name}.")
        await self._deliver(job, "\n".join(lines), attach)

    async def post_error(self, job: Job, message: str) -> None:
        interaction = self._live.get(Destination.of(job).token)
        if interaction is not None and job.prediction_id is None:
            # Replicate refused to start it: nothing ran, so only this person needs to know.
            await self._answer_privately(interaction, _fit(f"{_mention(job)} {message}"))
            return
        await self._deliver(job, f"{self._status(job)}\n{message}", [])

    async def post_notice(self, channel: str, text: str) -> None:
        """Admin notices (budget alerts): they name people without pinging them."""
        target = self.client.get_partial_messageable(int(channel))
        for chunk in split_text(text):
            await target.send(chunk, allowed_mentions=discord.AllowedMentions.none())

    # ---- sending ----------------------------------------------------------------------

    def _status(self, job: Job) -> str:
        text = status_text(job, mention=_mention(job))
        if len(job.prompt) > PROMPT_SHOWN:
            text = text.replace(job.prompt, job.prompt[: PROMPT_SHOWN - 1] + "…", 1)
        return text

    def _hook(self, where: Destination) -> discord.Webhook:
        return discord.Webhook.partial(where.application_id, where.token, client=self.client)

    async def _edit_original(self, job: Job, *, content: str) -> discord.WebhookMessage | None:
        """Show `content` on the original response while its token lives; else do nothing."""
        where = Destination.of(job)
        if not where.token_alive(self.clock()):
            return None
        try:
            return await self._hook(where).edit_message(
                ORIGINAL, content=content, allowed_mentions=_mentions(job)
            )
        except discord.HTTPException as exc:
            if not _token_dead(exc):
                raise
            return None

    async def _deliver(self, job: Job, content: str, files: Sequence[OutputFile]) -> None:
        """The final word: an edit of the original response, else a reply in the channel."""
        where = Destination.of(job)
        content = _fit(content)
        if where.token_alive(self.clock()):
            try:
                await self._hook(where).edit_message(
                    ORIGINAL,
                    content=content,
                    attachments=_files(files),
                    allowed_mentions=_mentions(job),
                )
                return
            except discord.HTTPException as exc:
                if not _token_dead(exc):
                    raise
                log.info("job %s: interaction token expired; posting in the channel", job.id)
        channel = self.client.get_partial_messageable(where.channel_id, guild_id=where.guild_id)
        reference = None
        if where.message_id:
            reference = discord.MessageReference(
                message_id=where.message_id, channel_id=where.channel_id, fail_if_not_exists=False
            )
        await channel.send(
            content, files=_files(files), reference=reference, allowed_mentions=_mentions(job)
        )


def _mention(job: Job) -> str:
    return f"<@{job.user_id}>"


def _mentions(job: Job) -> discord.AllowedMentions:
    """Ping only the person who asked, whatever the prompt says."""
    return discord.AllowedMentions(
        everyone=False, roles=False, users=[discord.Object(int(job.user_id))]
    )


def _files(outputs: Sequence[OutputFile]) -> list[discord.File]:
    """Fresh File objects (discord.py closes them after each request)."""
    return [discord.File(io.BytesIO(o.content), filename=o.filename) for o in outputs]


def fit_files(files: Sequence[OutputFile], limit: int) -> tuple[list[OutputFile], list[str]]:
    """The files one message can carry, and a line linking each of the others.

    Discord caps the whole upload, not each file, so the files share `limit` (less room for
    the rest of the request); a file that does not fit is linked rather than failing the post.
    """
    room = limit - UPLOAD_OVERHEAD
    attach: list[OutputFile] = []
    notes: list[str] = []
    for output in files:
        size = len(output.content)
        if size <= room and len(attach) < MAX_ATTACHMENTS:
            attach.append(output)
            room -= size
            continue
        if size > limit - UPLOAD_OVERHEAD:
            why = f"is over this server's {_megabytes(limit)} upload limit"
        elif len(attach) >= MAX_ATTACHMENTS:
            why = f"did not fit ({MAX_ATTACHMENTS} files per message)"
        else:
            why = f"did not fit in this message's {_megabytes(limit)} upload limit"
        head = f"📎 {output.filename} ({_megabytes(size)}) {why}"
        if output.source_url:
            notes.append(f"{head}; the link expires in an hour: <{output.source_url}>")
        else:
            notes.append(f"{head}, and there is no link to share.")
    return attach, notes


def _fit(content: str) -> str:
    """At most one message's worth of content (a model's error can be long)."""
    return content if len(content) <= MESSAGE_LIMIT else content[: MESSAGE_LIMIT - 1] + "…"


def _token_dead(exc: discord.HTTPException) -> bool:
    """The interaction token expired, or its response message is gone."""
    return exc.status == 401 or exc.code in DEAD_TOKEN_CODES


def _megabytes(size: int) -> str:
    """Sizes as Discord shows them (binary units, called KB and MB)."""
    if size < 1024 * 1024:
        return f"{max(1, round(size / 1024))} KB"
    return f"{size / (1024 * 1024):.1f} MB".replace(".0 MB", " MB")


def split_text(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Pieces of at most `limit` characters, cut at line breaks where possible."""
    pieces: list[str] = []
    while len(text) > limit:
        cut = text.rfind("\n", 0, limit)
        cut = cut if cut > 0 else limit
        pieces.append(text[:cut])
        text = text[cut:].lstrip("\n")
    return [*pieces, text] if text or not pieces else pieces


# ---- the platform ---------------------------------------------------------------------


def point_discord_py(settings: Settings) -> Callable[[], None]:
    """Aim discord.py's REST and gateway at the configured URLs; returns the undo."""
    base, gateway = discord.http.Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = str(settings.discord_api_url).rstrip("/")
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord_gateway_url)

    def undo() -> None:
        discord.http.Route.BASE = base
        DiscordWebSocket.DEFAULT_GATEWAY = gateway

    return undo


@contextlib.asynccontextmanager
async def discord_platform(
    runtime: Runtime, *, connect_gateway: bool = True
) -> AsyncIterator[list[BaseRoute]]:
    """Log in (which syncs the commands), run the gateway in this loop, close on exit.

    Discord reaches the bot over the gateway only, so no HTTP routes are yielded. Tests pass
    `connect_gateway=False` and feed interactions to the client themselves.
    """
    token = runtime.settings.discord_token
    if token is None:
        raise ConfigError("DISCORD_TOKEN: not set (README: Set up in Discord)")
    undo = point_discord_py(runtime.settings)
    client = ConjureClient(runtime.settings.discord_guild_id)
    adapter = DiscordAdapter(client, runtime.service)
    for command in build_commands(runtime.catalog, adapter):
        client.tree.add_command(command, guild=client.guild)
    runtime.service.add_adapter(adapter)
    gateway: asyncio.Task[None] | None = None
    try:
        try:
            await client.login(token.get_secret_value())
        except discord.LoginFailure:
            raise ConfigError(
                "DISCORD_TOKEN: Discord rejected the token; copy it again from the Developer "
                "Portal (your application, Bot, Reset Token)"
            ) from None
        if connect_gateway:
            gateway = asyncio.create_task(client.connect(reconnect=True), name="discord-gateway")
            gateway.add_done_callback(_gateway_stopped)
        yield []
    finally:
        runtime.service.adapters.pop(PLATFORM, None)
        await client.close()
        if gateway is not None:
            gateway.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await gateway
        undo()


def _gateway_stopped(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the Discord gateway connection stopped", exc_info=task.exception())
