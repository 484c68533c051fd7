"""The one interface every chat platform implements, and the values that cross it.

Two directions, both narrow. Into the core: an adapter turns its platform's event into a
`CommandRequest` and hands it to `bot.commands.handler.Commands.handle`, which answers with a
`Reply`. Out of the core: the job service calls the five required methods of `ChatAdapter`
below, and two with defaults that a platform may refine for deliveries: `deliver_result` (post
a result once, across a takeover, with a checkpoint) and `retry_delay` (which errors pass);
and one for platforms that show a text answer as it is written, `show_partial` (bot.streaming).
Everything an adapter needs to find its messages again (a Slack thread ts, a
Discord interaction token) lives in `job.destination`, which the adapter itself fills in, so any
instance, or the same one after a restart, can deliver a job that another one started.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bot.markup import Text
from storage.models import Job


@dataclass(frozen=True)
class OutputFile:
    """One downloaded output, ready to upload."""

    filename: str
    content: bytes
    content_type: str
    source_url: str | None = None  # where it came from (expires an hour after the run)


@dataclass(frozen=True)
class LinkedOutput:
    """An output too large for where it goes, or too slow to download: linked (Replicate's link,
    good for an hour) instead of uploaded. `number` is 1-based; `size` is None when the host did
    not say; `too_slow` is the deadline (seconds) its download outlasted, None for one too large."""

    url: str
    number: int
    size: int | None
    limit: int
    too_slow: float | None = None


@dataclass(frozen=True)
class JobResult:
    """What a finished job produced: files to upload and/or text to post."""

    files: list[OutputFile] = field(default_factory=list)
    text: str | None = None
    skipped: list[str] = field(default_factory=list)  # outputs not fetched (too big, bad host)
    links: list[LinkedOutput] = field(default_factory=list)  # too big to upload: linked


@dataclass(frozen=True)
class CommandRequest:
    """A slash command as any platform delivers it, before parsing.

    `text` is what followed the command, as typed. `options` holds values a platform delivers
    apart from the text (Discord's typed options, by option name; None for one left out); the
    core validates them with the same parser as flags typed in the text. `request_key` is the
    platform's own id of this command (`slack:<trigger_id>`, `discord:<interaction id>`): a
    command that arrives again with the same key (a retry, a redelivery, another instance) runs
    no second job.
    """

    platform: str
    workspace: str
    channel: str
    user_id: str
    command: str
    text: str
    user_name: str | None = None
    options: Mapping[str, Any] | None = None
    destination: dict[str, Any] = field(default_factory=dict)
    request_key: str | None = None
    # Set for a job started by a button on another job's message (bot.followups).
    parent_id: str | None = None
    followup: str | None = None


@dataclass(frozen=True)
class Reply:
    """The core's answer to a command, for the person who gave it, privately.

    `text` is what to tell them (None: the job's own messages say it all). `job` is the job that
    started, if one did. `refused` is true when nothing ran: bad input, a limit, an error, or
    a question with `buttons` (nothing runs until one is pressed).
    """

    text: Text | None = None
    job: Job | None = None
    refused: bool = False
    # Buttons to show with `text`, privately (the question before a costly job: Run it, Cancel).
    # (bot.followups.buttons.Button: not imported here, since that module imports this one.)
    buttons: tuple[Any, ...] = ()


Checkpoint = Callable[[Mapping[str, Any]], Awaitable[None]]
"""Given to `ChatAdapter.deliver_result` by the core: merges the fields into the job's
destination and stores them before it returns, so a delivery that dies after a step an adapter
cannot take back (files shared) leaves a trace that the next delivery can check."""

Acknowledge = Callable[[], Awaitable[Mapping[str, Any] | None]]
"""Called by the core once a command is valid and before any slow work (the database,
Replicate): the adapter answers its platform's deadline here (Slack's ack, Discord's defer) and
may return fields to add to the job's destination (the deferred response's message id)."""


class ShowAgain(Exception):
    """Raised by `show_partial` that showed nothing and must be made again: after `after`
    seconds (a 429's Retry-After), or with another kind of write (Slack: an edit, once a
    streaming message streams no more). The relay makes it at its next show, after checking
    again that the job still runs: sent from within the first, it would follow a check made
    before it, and could land over the answer a delivery elsewhere wrote meanwhile."""

    def __init__(self, after: float = 0.0) -> None:
        super().__init__(after)
        self.after = after


async def no_acknowledgement() -> None:
    """For platforms without a deadline (the console)."""
    return None


class ChatAdapter(ABC):
    """Shows a job's life where its command came from. The job service calls only these.

    Every method may raise: the service logs the error and carries on as each one says. None
    may assume it is called on the instance that started the job (the destination says where
    to post), and each may be called again for the same job after a crash or a restart.
    """

    platform: str

    @abstractmethod
    async def post_status(self, job: Job) -> dict[str, Any]:
        """Announce a new job (queued); return destination fields to remember (the thread).

        Called once, before the prediction is created. On an error the job still runs and its
        result is still delivered, without an announcement to update.
        """

    @abstractmethod
    async def update_status(self, job: Job) -> None:
        """Show a running job's new status or progress on its announcement.

        Called only for jobs that are not finished, at most once per progress interval and
        only when the status or the progress moved. Errors are logged and ignored: progress is
        cosmetic.
        """

    @abstractmethod
    async def post_result(self, job: Job, result: JobResult) -> None:
        """Deliver a succeeded job's outputs, and show its final status (duration, cost).

        An error that `retry_delay` calls passing is tried again (soon, then by the sweeper),
        so this may be called more than once for a job; any other error marks the delivery
        failed and the result is not posted again.
        """

    async def deliver_result(
        self, job: Job, result: JobResult, checkpoint: Checkpoint | None
    ) -> None:
        """What the core calls to deliver a result: post_result, for a delivery that may be a
        second one (its first claimant died after posting, before it was marked delivered).

        An adapter whose platform can say what was already posted overrides this: it records
        what it is about to post with `checkpoint` before the step that makes it visible and,
        finding that record in `job.destination` on a later call, asks its platform before
        posting again. This default cannot tell, and posts.
        """
        await self.post_result(job, result)

    streams_text: bool = False
    """Whether `show_partial` shows anything: the core reads a text model's stream only then."""
    stream_interval: float = 1.0
    """Seconds at least between two `show_partial` calls for one job (the platform's limits)."""

    async def show_partial(self, job: Job, text: str, checkpoint: Checkpoint) -> None:
        """Show a text answer while it is written: `text` is all of it so far (reasoning
        folded), each call's a continuation of the last one's. Called by bot.streaming at most
        once per `stream_interval`, never after the result's delivery has begun, and only on
        the instance that created the prediction. A message made for it must be recorded with
        `checkpoint` (it merges into `job.destination`) so that the delivery, on any instance
        or after a restart, makes it the final answer instead of posting another. Errors are
        logged; after a few in a row the answer waits for its delivery. ShowAgain defers a
        second write to the next show (checked first, as every show is). Default: nothing."""
        return None

    def upload_limit(self, job: Job) -> int | None:
        """The largest file this job's destination takes, in bytes (None: only the download
        cap applies); a larger output is linked instead of downloaded."""
        return None

    @abstractmethod
    async def post_error(
        self, job: Job, message: str, checkpoint: Checkpoint | None = None
    ) -> None:
        """Tell the person a job failed, was canceled or could not start, and show its final
        status. `message` is plain text (shown literally). An error is logged.

        `checkpoint` is as for deliver_result: an adapter whose failure reply is a new message
        records it, so a delivery taken over after it posts no second one."""

    def retry_delay(self, exc: BaseException) -> float | None:
        """Whether an error of post_result or post_error will pass: the seconds to wait at
        least before trying again (the platform's Retry-After; 0 when it gave none), or None
        when trying again cannot help (the platform refused for good).

        This default treats timeouts and dropped connections as passing, anything else as
        permanent; adapters add their platform's rate limits and server errors.
        """
        return 0.0 if isinstance(exc, TimeoutError | ConnectionError) else None

    @abstractmethod
    async def post_notice(self, channel: str, text: Text) -> None:
        """Post an admin notice (a budget alert) in a configured channel.

        An error keeps the notice in the outbox: it is sent again later.
        """
