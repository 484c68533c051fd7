"""The Discord side of a job: its interaction's response shows the status, then the result.

An interaction is deferred at once ("Conjure is thinking..."); that response then shows the
status, progress and finally the result with the files attached. Interaction tokens die after
15 minutes, so a job that outlives its token is posted by the bot in the channel, as a reply to
that response, or by DM to its asker when the channel refuses the bot. Everything needed to
reach the message again lives in `job.destination`, so a restarted process can still deliver.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

import aiohttp
import discord

from adapters.discord import markup
from adapters.discord.buttons import job_view
from adapters.discord.destination import DEFAULT_ATTACHMENT_LIMIT, Destination
from adapters.discord.streaming import LiveAnswers, ShowSession
from adapters.discord.uploads import UPLOAD_OVERHEAD, as_files, fit_files
from bot.adapter import ChatAdapter, Checkpoint, JobResult, OutputFile
from bot.catalog import Catalog
from bot.markup import Text
from bot.messages import followup_label, status_text
from bot.replicate.outputs import output_flagged
from storage.models import Job, utcnow

log = logging.getLogger(__name__)

PLATFORM = "discord"
PROMPT_SHOWN = 300  # characters of the prompt repeated in the status
DEAD_TOKEN_CODES = {50027, 10015, 10008}  # invalid webhook token, unknown webhook/message
# A channel post refused for good: Unknown Channel, Missing Access, Missing Permissions.
CHANNEL_REFUSED_CODES = {10003, 50001, 50013}
ALREADY_ACKNOWLEDGED = 40060  # Discord's error code for a second response to one interaction
ORIGINAL: Any = "@original"  # discord.py types message ids as int; Discord takes this alias
ANSWERED_PRIVATELY = "Conjure answered privately."  # shown a moment, then deleted
# Seconds a deferral may take. Discord drops an interaction not answered within 3 s, so one
# still unanswered after this never will be: its job is given back rather than held for minutes.
DEFER_DEADLINE = 10.0
DEFER_BY = 1.5  # seconds after a command or press: defer if the core has not acknowledged it


class DiscordAdapter(ChatAdapter):
    """Shows each job on its interaction's response message (or, later, in the channel), with
    the job's buttons (Cancel while it runs; Re-roll, U1.., V1.. on a finished image job)."""

    platform = PLATFORM

    def __init__(self, client: discord.Client, catalog: Catalog) -> None:
        self.client = client
        self.catalog = catalog  # which follow-ups each command offers
        self.clock: Callable[[], datetime] = utcnow  # replaceable, to test token expiry
        self._live: dict[str, discord.Interaction] = {}  # token -> interaction being submitted
        self.answers = LiveAnswers()

    streams_text = True
    stream_interval = 1.0  # one edit of a response a second at most (Discord's rate limits)

    async def show_partial(self, job: Job, text: str, checkpoint: Checkpoint) -> None:
        """The answer so far under the status, on the interaction's response (an edit)."""
        self.answers.set(job.id, text)
        status = self.answers.status(job.id, self._status(job))
        await self._edit_original(job, content=self.answers.content(job.id, status), once=True)

    @contextlib.contextmanager
    def submitting(self, interaction: discord.Interaction) -> Iterator[None]:
        """While its job is being started, a refusal by Replicate can answer the interaction
        itself, privately (see post_error)."""
        self._live[interaction.token] = interaction
        try:
            yield
        finally:
            self._live.pop(interaction.token, None)

    async def post_status(self, job: Job) -> dict[str, Any]:
        message = await self._edit_original(job, content=self._status(job))
        return {"message_id": str(message.id)} if message else {}

    async def update_status(self, job: Job) -> None:
        if self.answers.live(job.id):
            self.answers.note_status(job.id, self._status(job))  # shown with the next text
            return
        await self._edit_original(job, content=self._status(job))

    async def post_result(self, job: Job, result: JobResult) -> None:
        """One edit: the final status, the outputs attached (or linked), any text."""
        self.answers.pop(job.id)
        limit = Destination.of(job).attachment_size_limit
        files = list(result.files)
        attach, notes = fit_files(files, limit)
        lines = [self._status(job), *notes, *(f"⚠️ {reason}" for reason in result.skipped)]
        if result.text and len("\n".join(lines)) + 2 + len(result.text) <= markup.MESSAGE_LIMIT:
            lines.append("\n" + result.text)
        elif result.text:  # too long for a message: attach it, with the files
            name = f"{job.command}-{job.id[:8]}.txt"
            attach, notes = fit_files(
                [*files, OutputFile(name, result.text.encode(), "text/plain")], limit
            )
            lines = [self._status(job), *notes, *(f"⚠️ {reason}" for reason in result.skipped)]
            lines.append(f"The answer is {len(result.text):,} characters long; it is in {name}.")
            # Its beginning stays, as it was shown while it was written.
            room = markup.MESSAGE_LIMIT - len("\n".join(lines)) - len("\n\n…")
            if room > 0:
                lines.append("\n" + result.text[:room].rstrip() + "…")
        await self._deliver(
            job, "\n".join(lines), attach, kind="r", view=job_view(self.catalog, job)
        )

    def upload_limit(self, job: Job) -> int | None:
        """The interaction's `attachment_size_limit`, less room for the message itself."""
        return Destination.of(job).attachment_size_limit - UPLOAD_OVERHEAD

    async def post_error(
        self, job: Job, message: str, checkpoint: Checkpoint | None = None
    ) -> None:
        """The failure in the job's own response (an edit), or a channel post that carries a
        nonce (as a result does), so a second try shows it once: `checkpoint` is not needed.
        Privately when nothing ran."""
        self.answers.pop(job.id)
        interaction = self._live.get(Destination.of(job).token)
        if interaction is not None and job.prediction_id is None:
            # Replicate refused to start it: nothing ran, so only this person needs to know.
            text = markup.fit(f"{markup.mention(job.user_id)} {message}")
            await answer_privately(interaction, text)
            return
        await self._deliver(job, f"{self._status(job)}\n{message}", [], kind="e", view=None)

    def retry_delay(self, exc: BaseException) -> float | None:
        """429s (past discord.py's own retries) and 5xx pass, honouring Retry-After, as do
        dropped connections and timeouts. Other 4xx are Discord refusing for good: 403 (no
        permission in the channel), 404 (the channel or message is gone), 400 (a bad body)."""
        if isinstance(exc, discord.HTTPException):
            if exc.status == 429 or exc.status >= 500:
                headers = getattr(exc.response, "headers", None) or {}
                try:
                    return max(0.0, float(headers.get("Retry-After", 0)))
                except (TypeError, ValueError):
                    return 0.0
            return None
        if isinstance(exc, aiohttp.ClientError | TimeoutError | ConnectionError):
            return 0.0
        return None

    async def post_notice(self, channel: str, text: Text) -> None:
        """Admin notices (budget alerts): they name people without pinging them."""
        target = self.client.get_partial_messageable(int(channel))
        for chunk in markup.split_text(markup.render(text)):
            await target.send(chunk, allowed_mentions=discord.AllowedMentions.none())

    # ---- sending ----------------------------------------------------------------------

    def _status(self, job: Job) -> str:
        status = markup.render(status_text(job, prompt_limit=PROMPT_SHOWN))
        label = followup_label(job.followup)
        return f"{label} · {status}" if label else status

    def _hook(self, where: Destination) -> discord.Webhook:
        assert where.token is not None  # only called while token_alive
        return discord.Webhook.partial(where.application_id, where.token, client=self.client)

    async def _edit_original(
        self, job: Job, *, content: str, once: bool = False
    ) -> discord.WebhookMessage | None:
        """Show `content` and the running job's buttons (Cancel) on the original response while
        its token lives; else do nothing. `once`: a 429 or 5xx raises ShowAgain (ShowSession)."""
        where = Destination.of(job)
        if not where.token_alive(self.clock()):
            return None
        hook = self._hook(where)
        if once:
            hook.session = ShowSession(hook.session)  # type: ignore[assignment]
        try:
            return await hook.edit_message(
                ORIGINAL,
                content=content,
                view=job_view(self.catalog, job),
                allowed_mentions=markup.pings_only_the_asker(job),
            )
        except discord.HTTPException as exc:
            if not _token_dead(exc):
                raise
            return None

    async def _deliver(
        self,
        job: Job,
        content: str,
        files: Sequence[OutputFile],
        *,
        kind: str,
        view: discord.ui.View | None,
    ) -> None:
        """The final word: an edit of the original response (the same edit twice shows once),
        else a reply in the channel, sent with a nonce of the job and `kind` ("r" result, "e"
        error) that Discord enforces: a second delivery after a takeover, within a few
        minutes, gets the message the first one created instead of a second one. `view` is
        the job's buttons now; None removes the ones the response had (Cancel)."""
        where = Destination.of(job)
        content = markup.fit(content)
        mentions = markup.pings_only_the_asker(job)
        # Outputs the model flagged as not safe for work are spoilers outside NSFW channels.
        spoiler = output_flagged(job.output) and not where.age_restricted
        if where.token_alive(self.clock()):
            try:
                await self._hook(where).edit_message(
                    ORIGINAL,
                    content=content,
                    attachments=as_files(files, spoiler),
                    view=view,
                    allowed_mentions=mentions,
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
        try:
            await channel.send(
                content,
                files=as_files(files, spoiler),
                reference=reference,
                allowed_mentions=mentions,
                view=view,
                nonce=delivery_nonce(job, kind),  # discord.py adds enforce_nonce: true
            )
            return
        except discord.HTTPException as exc:
            if exc.code not in CHANNEL_REFUSED_CODES:
                raise
            log.warning("job %s: the channel refused the post (%s); sending it by DM", job.id, exc)
        await self._direct(job, where, content, files, kind)

    async def _direct(
        self,
        job: Job,
        where: Destination,
        content: str,
        files: Sequence[OutputFile],
        kind: str,
    ) -> None:
        """The final word by DM to the asker, once the token is dead and the channel refuses
        the bot for good: a user-installed app in a server it is not in, a channel it may not
        post or attach files in, a channel deleted meanwhile. Else the paid result reached no
        one. A DM takes the default upload limit only, so files are fitted again; it has no
        buttons, since a press must come from the job's own channel, and flagged outputs are
        spoilers whatever the channel was."""
        attach, notes = fit_files(files, DEFAULT_ATTACHMENT_LIMIT)
        head = f"Conjure could not post in <#{where.channel_id}>, so your answer is here."
        text = markup.fit("\n".join([head, content, *notes]))
        channel = await self.client.create_dm(discord.Object(int(job.user_id)))
        await channel.send(
            text,
            files=as_files(attach, output_flagged(job.output)),
            allowed_mentions=markup.pings_only_the_asker(job),
            nonce=delivery_nonce(job, kind),
        )


async def defer_publicly(
    interaction: discord.Interaction,
) -> discord.InteractionCallbackResponse[Any] | None:
    """The public "thinking", given up on (TimeoutError) after DEFER_DEADLINE: discord.py would
    wait minutes for a hung answer (aiohttp's default), holding the recorded job unstarted and
    its person's reservation all that while, for an interaction Discord has dropped."""
    async with asyncio.timeout(DEFER_DEADLINE):
        return await defer_thinking(interaction)


async def defer_thinking(
    interaction: discord.Interaction, *, ephemeral: bool = False
) -> discord.InteractionCallbackResponse[Any] | None:
    """The "thinking" (publicly, or to this person only), made once whatever Discord answers
    (see _defer)."""
    return await _defer(interaction, thinking=True, ephemeral=ephemeral)


async def defer_update(interaction: discord.Interaction) -> None:
    """A press's silent deferral (the pressed message is edited later), made once whatever
    Discord answers (see _defer)."""
    await _defer(interaction, thinking=False, ephemeral=False)


async def _defer(
    interaction: discord.Interaction, *, thinking: bool, ephemeral: bool
) -> discord.InteractionCallbackResponse[Any] | None:
    """`interaction.response.defer`, which Discord may make though its answer is lost.

    A deferral Discord made but whose answer was lost (a 5xx, a dropped connection) is sent
    again by discord.py, and refused as already acknowledged (40060): that is this deferral,
    in place, so it counts as done (None: its message id unknown). Raised, it gave the job
    back and left the person a "thinking" that never ended, or a Cancel that did nothing. A
    40060 on the first try is a copy of the interaction that another handler answered, and
    is raised as before."""
    watch = _LostAnswers(interaction._session)
    interaction._session = watch  # type: ignore[assignment]
    try:
        return await interaction.response.defer(thinking=thinking, ephemeral=ephemeral)
    except discord.HTTPException as exc:
        if exc.code != ALREADY_ACKNOWLEDGED or not watch.lost:
            raise
        log.info("a Discord deferral was made, but its answer was lost; it stands")
        # discord.py only marks a response done when it got the answer: without this, the
        # next answer would be sent as a first response, and refused again.
        interaction.response._response_type = (
            discord.InteractionResponseType.deferred_channel_message
            if thinking
            else discord.InteractionResponseType.deferred_message_update
        )
        return None
    finally:
        interaction._session = watch.session


class _LostAnswers:
    """An interaction's HTTP session while it is deferred, noting an answer Discord did not
    give (5xx, a dropped connection), after which discord.py sends the callback again."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.lost = False

    @contextlib.asynccontextmanager
    async def request(
        self, method: str, url: Any, **kwargs: Any
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        try:
            async with self.session.request(method, url, **kwargs) as response:
                if response.status >= 500:
                    self.lost = True
                yield response
        except OSError:  # aiohttp's ClientOSError: the request may have reached Discord
            self.lost = True
            raise


async def answer_privately(
    interaction: discord.Interaction, text: str, view: discord.ui.View | None = None
) -> None:
    """Nothing was created: say so to this person only, and drop the public "thinking".

    A follow-up sent while a deferred response still loads is no new message: Discord makes it
    that response, public, ignoring the ephemeral flag (Create Followup Message), and the delete
    below would then take the answer away. The response is edited first, which ends its
    loading, so the follow-up is a private message of its own."""
    with contextlib.suppress(discord.HTTPException):
        await interaction.edit_original_response(content=ANSWERED_PRIVATELY, view=None)
    if view is not None:
        await interaction.followup.send(text, ephemeral=True, view=view)
    else:
        await interaction.followup.send(text, ephemeral=True)
    with contextlib.suppress(discord.HTTPException):
        await interaction.delete_original_response()


def delivery_nonce(job: Job, kind: str) -> str:
    """The nonce of a job's final channel post: at most 25 characters, one per job and kind."""
    return f"cj{kind}{job.id}"[:25]


def _token_dead(exc: discord.HTTPException) -> bool:
    """The interaction token expired, or its response message is gone."""
    return exc.status == 401 or exc.code in DEAD_TOKEN_CODES
