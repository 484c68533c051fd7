"""Relays a prediction's streamed text to its chat message, throttled, while it is written.

The stream is a view and nothing rests on it: what the person sees at the end, what the job
costs and when it ends all come from the webhook (JobService.deliver), which first closes the
relay (`close`: no show after it, none cut in half). A stream that breaks, or ends before `done`,
is read again from its last event id, and given up after a few tries in a row that bring nothing:
the answer still arrives whole with the webhook.

Shows are at most one per `adapter.stream_interval` seconds (Discord's edits, Slack's rate
limits); the first text is shown as soon as it arrives (time to first token), and every show
carries the whole text so far (reasoning folded, bot.reasoning), so a lost show costs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from bot.adapter import ChatAdapter, Checkpoint, JobResult, ShowAgain
from bot.reasoning import folded, live
from bot.replicate.stream import Event, StreamError
from storage.models import Job

log = logging.getLogger(__name__)

RECONNECTS = 2  # a stream is opened again (from its last event) this many times in a row
FAILED_SHOWS = 3  # shows failing in a row before the relay stops showing

Events = Callable[[str, str | None], AsyncIterator[Event]]
"""Opens a stream URL (after the given last event id): ReplicateClient.stream."""

StillRunning = Callable[[], Awaitable[bool]]
"""Whether the job is still running as recorded: false once its outcome is recorded, perhaps by
another instance, whose delivery then writes the whole answer (a show after it would cover it)."""


class StreamRelay:
    """One job's stream, shown through its adapter (see the module docstring)."""

    def __init__(
        self,
        adapter: ChatAdapter,
        job: Job,
        url: str,
        events: Events,
        checkpoint: Checkpoint,
        still_running: StillRunning | None = None,
    ) -> None:
        self.adapter = adapter
        self.job = job
        self.url = url
        self.events = events
        self.recorded: dict[str, Any] = {}  # destination fields the adapter recorded
        self.text = ""  # the raw text so far
        self.shown: str | None = None  # what the last show showed
        self._checkpoint = checkpoint
        self._still_running = still_running
        self._dirty = asyncio.Event()
        self._finished = False
        self._ended = False  # the stream said done (or error)
        self._closed = False
        self._lock = asyncio.Lock()  # held while a show is on its way
        self._task: asyncio.Future[None] | None = None

    def start(self, spawn: Callable[[Any], asyncio.Future[Any]]) -> None:
        self._task = spawn(self.run())

    def on_done(self, callback: Callable[[asyncio.Task[Any]], None]) -> None:
        """Call `callback` when the relay's task ends (read to the end, given up, closed)."""
        if self._task is not None:
            self._task.add_done_callback(callback)

    @property
    def done(self) -> bool:
        return self._task is None or self._task.done()

    async def run(self) -> None:
        """Read and show until the stream is done (or given up) and its last text shown."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._read())
            group.create_task(self._show())

    async def close(self) -> None:
        """Stop: no show starts after this, and one under way is waited for, not cut."""
        self._closed = True
        async with self._lock:
            pass
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _read(self) -> None:
        """Read the events, opened again after the last one where a connection breaks or
        ends before `done` (a proxy or the server closing it), as an EventSource does; given
        up after RECONNECTS tries in a row that brought nothing."""
        last_id: str | None = None
        failures = 0
        try:
            while failures <= RECONNECTS:
                read_from = last_id
                try:
                    async for event in self.events(self.url, last_id):
                        last_id = event.id
                        if event.event == "output":
                            self.text += event.data
                            self._dirty.set()
                        elif event.event in ("error", "done"):
                            # The webhook tells the outcome and the delivery, perhaps on
                            # another instance, writes the whole answer: no show after it.
                            self._ended = True
                            return
                    reason = "closed before done"
                except StreamError as exc:
                    reason = str(exc)
                failures = 0 if last_id != read_from else failures + 1
                log.info("job %s: stream ended (%s), %d in a row", self.job.id, reason, failures)
        finally:
            self._finished = True
            self._dirty.set()

    async def _show(self) -> None:
        failures = 0
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            text = live(self.text)
            if self._ended:
                return
            pause = self.adapter.stream_interval
            if text and text != self.shown:
                async with self._lock:
                    if self._closed or not await self._running():
                        return
                    try:
                        await self.adapter.show_partial(self.job, text, self._record)
                        self.shown, failures = text, 0
                    except ShowAgain as again:
                        self._dirty.set()  # at the next show, once the job is seen running
                        pause = max(pause, again.after)
                    except Exception as exc:
                        failures += 1
                        log.warning(
                            "job %s: could not show the answer so far (%r)", self.job.id, exc
                        )
                        if failures >= FAILED_SHOWS:
                            return
            if self._finished and not self._dirty.is_set():
                return
            await asyncio.sleep(pause)

    async def _running(self) -> bool:
        """Asked before each show: the delivery may be under way on another instance, which
        closes no relay here. An error reading it is not a reason to stop (shows are a view)."""
        if self._still_running is None:
            return True
        try:
            return await self._still_running()
        except Exception:
            log.warning(
                "job %s: could not read its status before a show", self.job.id, exc_info=True
            )
            return True

    async def _record(self, fields: Mapping[str, Any]) -> None:
        self.recorded.update(fields)
        await self._checkpoint(fields)


def fold_result(result: JobResult) -> JobResult:
    """The result as it is shown at the end: a reasoning model's `<think>` part folded."""
    if result.text is None:
        return result
    return dataclasses.replace(result, text=folded(result.text))
