"""The Slack side of a job: a status message that becomes the thread, and results inside it.

Where the bot cannot post (a channel it is not in, a DM between two people), the job has no
thread: its status and result go through the command's response_url, and files, which a
response_url cannot carry, go to the person's direct messages with the bot. Progress is not shown
there, because a response_url takes only five posts. Everything needed to find the job's
messages again lives in `job.destination`, so a restarted instance delivers as well as this one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from aiohttp import ClientError
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack import markup as say
from adapters.slack.buttons import status_blocks
from adapters.slack.files import OUTPUTS_KEY
from adapters.slack.reach import (
    BAD_TOKENS,
    SLACK_ERRORS,
    error_code,
    open_dm,
    passing,
    respond,
    retry_after,
)
from adapters.slack.streaming import ANSWER_KEY, AnswerStreams
from adapters.slack.uploads import FILES_KEY, Checkpoint, already_shared, upload_and_share
from bot.adapter import ChatAdapter, JobResult
from bot.catalog import Catalog
from bot.markup import Text
from bot.replicate.outputs import split_output
from storage.models import Job

log = logging.getLogger(__name__)
FILES_CHANNEL_KEY = "slack_files_channel"  # in job.destination: where those files are shared
# In job.destination: the ts of the status message when it is not the thread root (`thread_ts`,
# where results go), as for a follow-up posted in its parent's thread.
STATUS_KEY = "status_ts"
# In job.destination: the ts of the result's text reply in the thread, once posted, so that a
# delivery taken over after it (its instance died before marking it delivered) posts no second.
REPLY_KEY = "result_ts"
ERROR_KEY = "error_ts"  # the same for the reply that says the job failed
# In job.destination, for a job without a thread: how its result (or failure) was told through
# the response_url ("in_channel", "ephemeral", or "dm" once that expired), so that a takeover
# neither repeats it nor spends another of the response_url's five posts.
TOLD_KEY = "told_result"
TOLD_ERROR_KEY = "told_error"

PLATFORM = "slack"
LONG_TEXT_CHARS = 3000  # longer text outputs are uploaded as a .txt file
MAX_FILE_BYTES = 1_000_000_000  # Slack's limit per file; CONJURE_MAX_DOWNLOAD_BYTES is lower
# Slack refusing a post where the job's thread is: its result goes to the person elsewhere.
CANNOT_POST = frozenset(
    {
        "not_in_channel",
        "channel_not_found",
        "is_archived",
        "restricted_action",
        "team_access_not_granted",
        "thread_not_found",  # its parent, the status message, was deleted
    }
)
_NOUNS = {"image": "image", "video": "video", "audio": "audio clip"}
# Slack's own words for "not now": worth trying the same call again later.
# A status post that Slack answered with a passing error (a 5xx) is sent again once, after
# its Retry-After (between these bounds), before the job is taken for one without a thread.
STATUS_TRIES = 2
STATUS_WAIT = (0.5, 5.0)


class SlackAdapter(ChatAdapter):
    """Posts a job's status, progress, result and errors into its Slack thread."""

    platform = PLATFORM

    def __init__(
        self, client: AsyncWebClient, catalog: Catalog, *, long_text_chars: int = LONG_TEXT_CHARS
    ) -> None:
        self.client = client
        self.catalog = catalog
        self.long_text_chars = long_text_chars
        self.answers = AnswerStreams(client, long_text_chars)

    # ---- answers as they are written ------------------------------------------------------

    streams_text = True
    stream_interval = 1.0  # chat.update: about once a second; appends need no more

    async def show_partial(self, job: Job, text: str, checkpoint: Checkpoint) -> None:
        """The answer so far, in its own message in the thread (adapters.slack.streaming);
        nothing for a job without a thread (a response_url takes five posts in all)."""
        where = _thread(job)
        if where is not None:
            await self.answers.show(job, where, text, checkpoint)

    # ---- status ---------------------------------------------------------------------------

    async def post_status(self, job: Job) -> dict[str, Any]:
        """Post the status message, with its buttons: the thread parent, or, for a job whose
        destination already names a thread (a follow-up of a job in it), a reply in that thread.
        Without either, announce through the response_url instead."""
        text = say.announcement(job)
        thread_ts = job.destination.get("thread_ts")
        try:
            response = await self._post_status_message(job, text, thread_ts)
        except SLACK_ERRORS as exc:
            reason = error_code(exc)
            log.warning(
                "job %s: no thread in %s (%s); using response_url", job.id, job.channel, reason
            )
            note = say.SLACK_BUSY_NOTE if passing(exc) else say.NO_THREAD_NOTE
            kind = await respond(
                job.destination.get("response_url"), f"{text}\n{note}", in_channel=True
            )
            # Where in_channel was refused, later posts go straight to ephemeral (5 posts).
            return {"thread_ts": None, "no_thread": reason, "response_type": kind or "in_channel"}
        if thread_ts:
            # Results go into the thread; the status is this reply (STATUS_KEY).
            status = {STATUS_KEY: response["ts"]}
            return {"channel": response["channel"], "thread_ts": thread_ts, **status}
        return {"channel": response["channel"], "thread_ts": response["ts"]}

    async def _post_status_message(self, job: Job, text: str, thread_ts: str | None) -> Any:
        """chat.postMessage of the status, sent again once where Slack failed it (a 5xx): one
        bad second must not leave the job without its thread (results in a DM, and "I can't
        post here" said of a channel the bot is in). A transport error is not sent again: that
        post may have landed."""
        for attempt in range(1, STATUS_TRIES + 1):
            try:
                return await self.client.chat_postMessage(
                    channel=job.channel,
                    text=text,
                    blocks=status_blocks(job, self.catalog),
                    thread_ts=thread_ts,
                    unfurl_links=False,
                    unfurl_media=False,
                )
            except SlackApiError as exc:
                delay = self.retry_delay(exc)
                if delay is None or attempt == STATUS_TRIES:
                    raise
                log.warning("job %s: status post failed (%s); again", job.id, error_code(exc))
                await asyncio.sleep(min(max(delay, STATUS_WAIT[0]), STATUS_WAIT[1]))
        raise AssertionError("unreachable")  # pragma: no cover

    async def update_status(self, job: Job) -> None:
        """Edit the status message and its buttons (a no-op without a thread)."""
        where = _status_message(job)
        if where is None:
            return
        channel, ts = where
        text = say.announcement(job)
        try:
            await self.client.chat_update(
                channel=channel, ts=ts, text=text, blocks=status_blocks(job, self.catalog)
            )
        except SLACK_ERRORS as exc:
            # Only cosmetic: the result must still be delivered when the parent is gone.
            log.warning("job %s: could not update its status (%s)", job.id, error_code(exc))

    # ---- results --------------------------------------------------------------------------

    async def post_result(self, job: Job, result: JobResult) -> None:
        """Upload the outputs into the thread, then show done (duration, cost) on the parent."""
        await self.deliver_result(job, result, None)

    async def deliver_result(
        self, job: Job, result: JobResult, checkpoint: Checkpoint | None
    ) -> None:
        """post_result, once: the ids of files about to be shared (in the thread, or in the
        person's DM) are recorded (`checkpoint`) first, with where, and a later delivery that
        finds them asks Slack (files.info) whether they were shared there before it uploads
        again. Every file of a result, a long answer's .txt included, is shared in one call,
        so they are all there or none is."""
        where = _thread(job)
        shared_in = job.destination.get(FILES_CHANNEL_KEY)
        already = await self._already_shared(job, where, shared_in)
        if job.destination.get(ANSWER_KEY) and where is not None and not result.files:
            await self._finish_answer(job, result, where, checkpoint, already)
            await self.update_status(job)
            return
        if already and where is not None and shared_in in (None, where[0]):
            log.info("job %s: its files are already in the thread; not posted again", job.id)
            await self.update_status(job)
            return
        if where is not None and job.destination.get(REPLY_KEY):
            log.info("job %s: its answer is already in the thread; not posted again", job.id)
            await self.update_status(job)
            return
        if where is not None and not already:
            try:
                await self._result_in_thread(job, result, *where, checkpoint)
                await self.update_status(job)
                return
            except SlackApiError as exc:
                if error_code(exc) not in CANNOT_POST:
                    raise
                log.warning("job %s: the thread is gone (%s)", job.id, error_code(exc))
        dm_done = shared_in if already else None
        await self._result_elsewhere(job, result, checkpoint, dm_done=dm_done)

    async def _already_shared(
        self, job: Job, where: tuple[str, str] | None, shared_in: str | None
    ) -> bool:
        """Whether an earlier delivery of this job shared its files where they were going."""
        ids = job.destination.get(FILES_KEY) or []
        if not ids:
            return False
        if where is not None and shared_in in (None, where[0]):
            return await already_shared(self.client, ids, *where)
        if shared_in is not None:
            return await already_shared(self.client, ids, shared_in, None)
        return False

    async def _result_in_thread(
        self,
        job: Job,
        result: JobResult,
        channel: str,
        ts: str,
        checkpoint: Checkpoint | None = None,
    ) -> None:
        """Files with the text beside them (a linked output's note) in the comment of their one
        share: a second message after it would be skipped by a retry that finds them shared."""
        note = say.skipped_note(result.skipped)
        long_text = result.text is not None and len(result.text) > self.long_text_chars
        uploads = self._uploads(job, result, long_text)
        if uploads:
            if result.files:
                comment = say.files_comment(job.user_id, len(result.files), self._noun(job))
            else:
                comment = say.long_text_comment(job.user_id)
            comment += _beside(result.text, long_text)
            await self._share(uploads, channel, ts, comment + note, checkpoint)
        elif result.text is not None:
            reply = f"{say.mention(job.user_id)}\n{say.escape(result.text)}{note}"
            await self._reply_once(job, channel, ts, reply, checkpoint, REPLY_KEY)
        else:
            empty = f"{say.mention(job.user_id)} {say.nothing_to_show(result.skipped)}{note}"
            await self._reply_once(job, channel, ts, empty, checkpoint, REPLY_KEY)

    async def _finish_answer(
        self,
        job: Job,
        result: JobResult,
        where: tuple[str, str],
        checkpoint: Checkpoint | None,
        already: bool,
    ) -> None:
        """The answer written as it came: that message becomes the whole answer (edited, or
        its stream stopped), never a second message. A long one keeps its beginning there,
        and the whole text follows as a file (shared once, as any file: see deliver_result)."""
        text = result.text or ""
        note = say.skipped_note(result.skipped)
        if len(text) <= self.long_text_chars:
            body = f"{say.mention(job.user_id)}\n{say.escape(text)}{note}"
            await self.answers.finish(job, where[0], body)
            return
        start = f"{say.mention(job.user_id)}\n{say.escape(text[: self.long_text_chars])}"
        await self.answers.finish(job, where[0], f"{start}…{note}")
        if not already:
            uploads = self._uploads(job, result, True)
            await self._share(uploads, *where, say.long_text_comment(job.user_id), checkpoint)

    async def _result_elsewhere(
        self,
        job: Job,
        result: JobResult,
        checkpoint: Checkpoint | None = None,
        dm_done: str | None = None,
    ) -> None:
        """No thread: files (and long text) to the person's DM, the rest via response_url.
        `dm_done`: the DM where an earlier delivery already shared them."""
        if job.destination.get(TOLD_KEY):
            log.info("job %s: its result was already told; not told again", job.id)
            return
        long_text = result.text is not None and len(result.text) > self.long_text_chars
        dm: str | None = dm_done
        if dm_done is not None:
            body = say.DM_NOTE
        elif result.files or long_text:
            try:
                dm = await self._to_dm(job, result, long_text, checkpoint)
                body = say.DM_NOTE
            except SLACK_ERRORS as exc:
                if self.retry_delay(exc) is not None:
                    raise  # Slack's bad second (a 5xx, a timeout): the delivery tries again
                log.warning("job %s: could not DM the result (%s)", job.id, error_code(exc))
                body = say.NO_ACCESS if error_code(exc) in BAD_TOKENS else say.DM_FAILED
        elif result.text is not None:
            body = say.escape(result.text)
        else:
            body = say.nothing_to_show(result.skipped)
        summary = f"{say.announcement(job)}\n{say.mention(job.user_id)} {body}"
        await self._tell(job, summary + say.skipped_note(result.skipped), checkpoint, TOLD_KEY, dm)

    async def _to_dm(
        self, job: Job, result: JobResult, long_text: bool, checkpoint: Checkpoint | None = None
    ) -> str:
        """Files (and a long text) into the person's DM with the bot; returns the DM's id."""
        dm = await open_dm(self.client, job.user_id)
        intro = f"Your /{job.command} “{say.escape(say.clip(job.prompt, 200))}”:"
        if result.files:
            count = len(result.files)
            noun = self._noun(job) + ("s" if count > 1 else "")
            intro = f"{intro} {count} {noun}."
        intro += _beside(result.text, long_text)  # a linked output's note goes with the files
        await self._share(self._uploads(job, result, long_text), dm, None, intro, checkpoint)
        return dm

    def upload_limit(self, job: Job) -> int | None:
        """Slack takes files up to 1 GB; the download cap (CONJURE_MAX_DOWNLOAD_BYTES, 50 MiB
        by default, since a file is held in memory) is what links a video in practice."""
        return MAX_FILE_BYTES

    async def post_error(
        self, job: Job, message: str, checkpoint: Checkpoint | None = None
    ) -> None:
        """A threaded reply that mentions the person, then the parent shows how it ended;
        without a thread, the response_url. With `checkpoint`, the reply is recorded
        (ERROR_KEY, or TOLD_ERROR_KEY without a thread) and a delivery taken over after it
        posts no second one."""
        where = _thread(job)
        if where is not None and job.destination.get(ANSWER_KEY):
            with contextlib.suppress(*SLACK_ERRORS):
                await self.answers.abandon(job, where[0])
        if where is not None and job.destination.get(ERROR_KEY):
            log.info("job %s: its failure is already in the thread; not posted again", job.id)
            await self.update_status(job)
            return
        if where is not None:
            try:
                failure = say.failure_reply(job, message)
                await self._reply_once(job, *where, failure, checkpoint, ERROR_KEY)
                await self.update_status(job)
                return
            except SlackApiError as exc:
                if error_code(exc) not in CANNOT_POST:
                    raise
        if job.destination.get(TOLD_ERROR_KEY):
            log.info("job %s: its failure was already told; not told again", job.id)
            return
        failure = f"{say.announcement(job)}\n{say.failure_reply(job, message)}"
        await self._tell(job, failure, checkpoint, TOLD_ERROR_KEY)

    def retry_delay(self, exc: BaseException) -> float | None:
        """429s, 5xx and Slack's "try later" errors pass (honouring Retry-After), as do dropped
        connections and timeouts. Any other answer (a 4xx, `not_in_channel`, `invalid_auth`,
        `file_not_found`) is Slack refusing this request as it is: sending it again repeats it.
        """
        if isinstance(exc, SlackApiError):
            return retry_after(exc.response.headers) if passing(exc) else None
        if isinstance(exc, SlackRequestError | ClientError | TimeoutError | ConnectionError):
            return 0.0  # the upload URL failing (SlackRequestError), or the network
        return None

    # ---- admin notices --------------------------------------------------------------------

    async def post_notice(self, channel: str, text: Text) -> None:
        """A budget alert in the admins' channel (the bot must be a member of it).

        Errors propagate: the job service keeps the alert and retries it later.
        """
        await self.client.chat_postMessage(
            channel=channel, text=say.render(text), unfurl_links=False
        )

    # ---- Slack calls ----------------------------------------------------------------------

    async def _reply(self, channel: str, ts: str, text: str) -> str:
        posted = await self.client.chat_postMessage(
            channel=channel, thread_ts=ts, text=text, unfurl_links=False, unfurl_media=False
        )
        return str(posted["ts"])

    async def _reply_once(
        self,
        job: Job,
        channel: str,
        ts: str,
        text: str,
        checkpoint: Checkpoint | None,
        key: str,
    ) -> None:
        """A reply whose ts is recorded under `key` as soon as it is posted. A failure to
        record it does not fail a delivery the person already has."""
        posted = await self._reply(channel, ts, text)
        await _record(job, checkpoint, {key: posted})

    def _uploads(self, job: Job, result: JobResult, long_text: bool) -> list[dict[str, Any]]:
        """What to upload for a result: its files, and a long text answer as a .txt snippet."""
        count = len(result.files) + (1 if long_text else 0)
        urls = split_output(job.output)[0]
        uploads: list[dict[str, Any]] = []
        for index, output in enumerate(result.files):
            upload: dict[str, Any] = {
                "content": output.content,
                "filename": output.filename,
                "title": say.file_title(job, index, count),
                # Which output this is (U2 reads it back): skipped outputs leave gaps.
                "output": urls.index(output.source_url) + 1
                if output.source_url in urls
                else index + 1,
            }
            if output.content_type.startswith("image/"):
                upload["alt_txt"] = say.alt_text(job)
            uploads.append(upload)
        if long_text and result.text is not None:
            uploads.append(
                {
                    "content": result.text.encode("utf-8"),
                    "filename": f"{job.command}-{job.id[:8]}.txt",
                    "title": say.file_title(job, len(result.files), count),
                    "snippet_type": "text",
                }
            )
        return uploads

    async def _share(
        self,
        uploads: list[dict[str, Any]],
        channel: str,
        ts: str | None,
        comment: str,
        checkpoint: Checkpoint | None,
    ) -> None:
        async def record(fields: Mapping[str, Any]) -> None:
            if checkpoint is not None:
                outputs = [upload.get("output") for upload in uploads]
                await checkpoint({**fields, FILES_CHANNEL_KEY: channel, OUTPUTS_KEY: outputs})

        await upload_and_share(
            self.client, uploads, channel=channel, thread_ts=ts, comment=comment, checkpoint=record
        )

    async def _tell(
        self,
        job: Job,
        text: str,
        checkpoint: Checkpoint | None,
        key: str,
        dm: str | None = None,
    ) -> None:
        """Through the response_url (in the channel); once that has expired, by DM. Recorded
        under `key` once posted, as a threaded reply is (_reply_once)."""
        in_channel = job.destination.get("response_type", "in_channel") == "in_channel"
        how = await respond(job.destination.get("response_url"), text, in_channel=in_channel)
        if how is None:
            dm = dm or await open_dm(self.client, job.user_id)
            await self.client.chat_postMessage(channel=dm, text=text)
            how = "dm"
        await _record(job, checkpoint, {key: how})

    def _noun(self, job: Job) -> str:
        model = self.catalog.models.get(job.model)
        return _NOUNS.get(model.kind if model else "", "file")


async def _record(job: Job, checkpoint: Checkpoint | None, fields: Mapping[str, Any]) -> None:
    """Record what was just posted; a failure to record it does not fail a delivery the
    person already has."""
    if checkpoint is None:
        return
    try:
        await checkpoint(fields)
    except Exception:
        log.warning("job %s: could not record its posted answer", job.id, exc_info=True)


def _beside(text: str | None, long_text: bool) -> str:
    """A short text that goes with uploaded files, for their share's comment (a long one is
    itself uploaded)."""
    return f"\n{say.escape(text)}" if text is not None and not long_text else ""


def _thread(job: Job) -> tuple[str, str] | None:
    """(channel, thread root ts) when the job has a thread: where its results go."""
    ts = job.destination.get("thread_ts")
    channel = job.destination.get("channel") or job.channel
    return (channel, ts) if ts else None


def _status_message(job: Job) -> tuple[str, str] | None:
    """(channel, ts) of the job's status message: its own reply in the thread (a follow-up's),
    else the thread root (every other job, and those recorded before STATUS_KEY existed)."""
    where = _thread(job)
    if where is None:
        return None
    return where[0], str(job.destination.get(STATUS_KEY) or where[1])
