"""A text answer shown on the interaction's response while the model writes it.

The deferred response (@original) already shows the job's status; while the answer is written
it shows the status and, under it, the answer so far, edited at most about once a second (the
core's throttle, `stream_interval`: Discord's edit rate limits), and never sent again by
discord.py after a 429 or a 5xx (ShowSession). The final delivery is one more edit of the same
message (adapters.discord.adapter.post_result), so a streamed answer never becomes a second
message, after a restart either. What is shown is kept per job in this process so that a
progress update (update_status) does not wipe it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from adapters.discord import markup
from bot.adapter import ShowAgain
from bot.recent import Recent

SHOWN_SO_FAR = "✍️ "  # before an answer still being written


class ShowSession:
    """The bot's HTTP session, for the edit that shows the answer so far: an answer of 429 or
    5xx raises ShowAgain (after Retry-After) instead of letting discord.py wait and send the
    edit again from within the call. The relay makes the show again itself, once it has
    checked that the job still runs: discord.py's resend could land over the whole answer
    another instance delivered meanwhile, for good."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    @contextlib.asynccontextmanager
    async def request(
        self, method: str, url: Any, **kwargs: Any
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        async with self._session.request(method, url, **kwargs) as response:
            if response.status == 429 or response.status >= 500:
                raise ShowAgain(_seconds(response.headers.get("Retry-After")))
            yield response


def _seconds(value: str | None) -> float:
    try:
        return max(0.0, float(value or 0))
    except ValueError:
        return 0.0


class LiveAnswers:
    """The answers being written on this instance: job id -> the text so far, and the latest
    status, which a progress update leaves here for the next edit instead of editing itself
    (so the response is edited once a second, not once a second plus once per progress)."""

    def __init__(self) -> None:
        # Bounded: an answer another instance delivered is never popped here.
        self._texts: Recent[str, str] = Recent()
        self._statuses: Recent[str, str] = Recent()

    def set(self, job_id: str, text: str) -> None:
        self._texts[job_id] = text

    def live(self, job_id: str) -> bool:
        return job_id in self._texts

    def note_status(self, job_id: str, status: str) -> None:
        self._statuses[job_id] = status

    def status(self, job_id: str, status: str) -> str:
        """The latest status noted for a live answer, else `status`."""
        return self._statuses.get(job_id, status)

    def pop(self, job_id: str) -> None:
        self._texts.pop(job_id, None)
        self._statuses.pop(job_id, None)

    def content(self, job_id: str, status: str) -> str:
        """The status, and the answer so far under it when there is one, in one message (the
        start of a long answer: its whole text comes at the end, attached if need be)."""
        text = self._texts.get(job_id)
        if not text:
            return status
        room = markup.MESSAGE_LIMIT - len(status) - len(SHOWN_SO_FAR) - 3
        shown = text if len(text) <= room else text[: max(room - 1, 0)] + "…"
        return f"{status}\n\n{SHOWN_SO_FAR}{shown}"
