"""The one small interface every chat platform implements, and the values that cross it.

The core never imports an adapter: it holds adapters by platform name and calls these four
methods. Everything an adapter needs to find its message again (a Slack thread ts, a Discord
interaction token) lives in `job.destination`, which the adapter itself fills in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from storage.models import Job


@dataclass(frozen=True)
class OutputFile:
    """One downloaded output, ready to upload."""

    filename: str
    content: bytes
    content_type: str
    source_url: str | None = None  # where it came from (expires an hour after the run)


@dataclass(frozen=True)
class JobResult:
    """What a finished job produced: files to upload and/or text to post."""

    files: list[OutputFile] = field(default_factory=list)
    text: str | None = None
    skipped: list[str] = field(default_factory=list)  # outputs not fetched (too big, bad host)


@dataclass(frozen=True)
class CommandRequest:
    """A slash command as any platform delivers it, before parsing."""

    platform: str
    workspace: str
    channel: str
    user_id: str
    command: str
    text: str
    user_name: str | None = None
    destination: dict[str, Any] = field(default_factory=dict)


class ChatAdapter(Protocol):
    """Post a job's status, progress, result and errors to where its command came from."""

    platform: str

    async def post_status(self, job: Job) -> dict[str, Any]:
        """Announce the job; return destination fields to remember (e.g. the thread to use)."""
        ...

    async def update_status(self, job: Job) -> None:
        """Show the job's current status and progress on the announcement.

        A terminal status is always followed by post_result or post_error, so adapters may
        leave showing it to those (one edit instead of two)."""
        ...

    async def post_result(self, job: Job, result: JobResult) -> None:
        """Deliver the outputs (files and/or text) where the person will see them."""
        ...

    async def post_error(self, job: Job, message: str) -> None:
        """Tell the person, in plain words, that the job could not run or failed."""
        ...

    async def post_notice(self, channel: str, text: str) -> None:
        """Post an admin notice (a budget alert) in a configured channel."""
        ...
