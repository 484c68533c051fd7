"""A text answer written into its Slack thread as the model writes it.

Where the workspace has them, Slack's streaming messages: `chat.startStream` at the first text
(with the person as recipient, which channels require), `chat.appendStream` with what is new,
`chat.stopStream` at the end. Where it refuses them (an older workspace, a plan or token without
them), one threaded message edited with `chat.update`, throttled by the core; edited too from
the show after Slack ends a stream itself (it does after a quiet while). An append whose outcome
is unknown (a timeout, a dropped connection, a 5xx) is never sent again, since it may have
landed: the delivery writes the message whole instead. Either way the message's ts is recorded
in the job's destination (ANSWER_KEY) as soon as it exists, and the result's delivery finishes
that message instead of posting another: on this instance, on another, or after a restart, the
answer is one message.
"""

from __future__ import annotations

import contextlib
import logging

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack import markup as say
from adapters.slack.reach import error_code, not_resent, retry_after
from bot.adapter import Checkpoint, ShowAgain
from bot.recent import Recent
from storage.models import Job

log = logging.getLogger(__name__)

ANSWER_KEY = "answer_ts"  # in job.destination: the message the answer is written into
MODE_KEY = "answer_mode"  # "stream" (a streaming message) or "update" (a message edited)
STREAM, UPDATE = "stream", "update"
# Slack's ways of saying "not here": the workspace lacks the streaming methods, or this app
# may not use them. From then on this adapter edits a message instead.
REFUSED = frozenset(
    {
        "unknown_method",
        "not_allowed",
        "not_allowed_token_type",
        "method_deprecated",
        "missing_scope",
        "feature_not_enabled",
        "not_supported",
    }
)


def answer_body(job: Job, text: str, limit: int) -> str:
    """The answer message: the person mentioned, then the text (at most `limit` characters
    while it is written; a longer one ends as a file). A continuation of the last body."""
    return f"{say.mention(job.user_id)}\n{say.escape(text[:limit])}"


class AnswerStreams:
    """The answer messages this adapter is writing, and whether the workspace streams."""

    def __init__(self, client: AsyncWebClient, limit: int) -> None:
        self.client = client
        self._shows = not_resent(client)  # sent again by the relay only, after its check
        self.limit = limit
        self.refused = False  # the workspace refused the streaming methods once
        # job id -> the body the message holds, written by this process (none: not known here)
        self._written: Recent[str, str] = Recent()  # one delivered elsewhere is never popped

    async def show(
        self, job: Job, where: tuple[str, str], text: str, checkpoint: Checkpoint
    ) -> None:
        """Write `text` (all of it so far) into the job's answer message, creating it first.
        A 429 is sent again by the relay after its Retry-After (ShowAgain), once it has
        checked that the answer was not delivered meanwhile."""
        try:
            await self._show(job, where, text, checkpoint)
        except SlackApiError as exc:
            if exc.response.status_code != 429:
                raise
            raise ShowAgain(retry_after(exc.response.headers)) from exc

    async def _show(
        self, job: Job, where: tuple[str, str], text: str, checkpoint: Checkpoint
    ) -> None:
        body = answer_body(job, text, self.limit)
        channel, thread_ts = where
        ts = job.destination.get(ANSWER_KEY)
        if ts is None:
            ts, mode = await self._begin(job, channel, thread_ts, body)
            self._written[job.id] = body
            await checkpoint({ANSWER_KEY: ts, MODE_KEY: mode})
            return
        written = self._written.get(job.id)
        if body == written:
            return
        if job.destination.get(MODE_KEY) == STREAM:
            if written is None or not body.startswith(written):
                return  # what the message holds is not known here: the delivery writes it whole
            try:
                await self._shows.chat_appendStream(
                    channel=channel, ts=ts, markdown_text=body[len(written) :]
                )
            except Exception as exc:
                if not _stream_ended(exc):
                    if _may_have_landed(exc):
                        # A retry could write its text twice: no more appends, and the
                        # delivery (finish) stops the stream and writes the message whole.
                        del self._written[job.id]
                    raise
                # Slack ended the stream itself after a quiet while (a model thinking for
                # minutes): the message is edited from now on, as where streams are refused.
                # Not in this show: the stream may have been stopped by a delivery on another
                # instance, and the relay checks before the edit that none has happened.
                await checkpoint({MODE_KEY: UPDATE})
                raise ShowAgain from exc
        else:
            await self._shows.chat_update(channel=channel, ts=ts, text=body)
        self._written[job.id] = body

    async def _begin(self, job: Job, channel: str, thread_ts: str, body: str) -> tuple[str, str]:
        if not self.refused:
            try:
                started = await self._shows.chat_startStream(
                    channel=channel,
                    thread_ts=thread_ts,
                    markdown_text=body,
                    recipient_user_id=job.user_id,
                    recipient_team_id=job.workspace,
                )
                return str(started["ts"]), STREAM
            except SlackApiError as exc:
                if error_code(exc) not in REFUSED:
                    raise
                log.info(
                    "Slack refused chat.startStream (%s); editing a message instead",
                    error_code(exc),
                )
                self.refused = True
        posted = await self._shows.chat_postMessage(
            channel=channel, thread_ts=thread_ts, text=body, unfurl_links=False, unfurl_media=False
        )
        return str(posted["ts"]), UPDATE

    async def finish(self, job: Job, channel: str, body: str) -> None:
        """Make the answer message say `body` for good (the whole answer, or a note that it is
        a file): the rest appended as the stream stops, or, where this process did not write
        it all (a restart, another instance), the stream stopped and the message edited."""
        ts = str(job.destination[ANSWER_KEY])
        written = self._written.pop(job.id, None)
        if job.destination.get(MODE_KEY) == STREAM:
            if written is not None and body.startswith(written):
                rest = body[len(written) :]
                try:
                    await self.client.chat_stopStream(
                        channel=channel, ts=ts, **({"markdown_text": rest} if rest else {})
                    )
                    return
                except SlackApiError as exc:
                    # Refused, as a stream Slack ended itself after a quiet while (see show)
                    # is: the edit below writes the message whole.
                    log.info("job %s: chat.stopStream refused (%s)", job.id, error_code(exc))
            else:
                with contextlib.suppress(SlackApiError):  # stopped already (a delivery died)
                    await self.client.chat_stopStream(channel=channel, ts=ts)
        await self.client.chat_update(channel=channel, ts=ts, text=body)

    async def abandon(self, job: Job, channel: str) -> None:
        """The job ended without a result: stop its stream where it is (the error follows)."""
        self._written.pop(job.id, None)
        if job.destination.get(MODE_KEY) == STREAM:
            with contextlib.suppress(SlackApiError):
                await self.client.chat_stopStream(
                    channel=channel, ts=str(job.destination[ANSWER_KEY])
                )


def _stream_ended(exc: Exception) -> bool:
    """Whether Slack refused a write because the message streams no more."""
    return isinstance(exc, SlackApiError) and error_code(exc) == "message_not_in_streaming_state"


def _may_have_landed(exc: Exception) -> bool:
    """Whether a write that raised `exc` may still have been applied by Slack: no answer (a
    timeout, a dropped connection) or a 5xx. An `ok: false` answer or a 429 applied nothing."""
    if isinstance(exc, SlackApiError):
        return exc.response.status_code >= 500
    return True
