"""Server-sent events of a language model's prediction, as Replicate streams them.

A text model's prediction carries `urls.stream`; a `GET` of it (`Accept: text/event-stream`)
replays every event so far and then follows the run: `output` (a chunk of text), `error` (JSON
with the detail), `done` (`{}`, or `{"reason": "canceled"}`), each with an `id:` line (Replicate's
own client drops events without one), and `:` comments as keep-alives while nothing happens. A
`Last-Event-ID` resumes after that event. Like Replicate's streaming host, the URL lives outside
`/v1` and needs no token (it is a capability URL). The fault `cut_streams_after` closes a stream
after that many events, as a dropped connection would.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from bot.sandbox.problems import not_found

KEEPALIVE_SECONDS = 5.0  # a comment line this often while the run is quiet (tests lower it)


@dataclass
class EventLog:
    """One prediction's events, in order; `changed` wakes the streams that follow it."""

    events: list[tuple[str, str]] = field(default_factory=list)  # (event, data)
    closed: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def emit(self, event: str, data: str) -> None:
        """Add an event (nothing after `done`)."""
        if self.closed:
            return
        self.events.append((event, data))
        if event == "done":
            self.closed = True
        self.changed.set()
        self.changed = asyncio.Event()

    def output(self, chunk: str) -> None:
        self.emit("output", chunk)

    def end(self, status: str, error: Any = None) -> None:
        """The run's last events for a terminal `status`."""
        if status == "failed":
            self.emit("error", json.dumps({"detail": str(error or "prediction failed")}))
        reason = {"canceled": {"reason": "canceled"}, "aborted": {"reason": "canceled"}}
        self.emit("done", json.dumps(reason.get(status, {})))


def stream_url(base_url: str, prediction_id: str) -> str:
    return f"{base_url}/stream/{prediction_id}"


def encode(event_id: int, event: str, data: str) -> bytes:
    """One event on the wire; a multi-line `data` is one `data:` line per line."""
    lines = [f"event: {event}", f"id: {event_id}"]
    lines += [f"data: {line}" for line in data.split("\n")]
    return ("\n".join(lines) + "\n\n").encode()


async def follow(log: EventLog, after: int, cut_after: int) -> AsyncIterator[bytes]:
    """Events after index `after`, then each new one, with keep-alives; ends after `done`."""
    index = after
    sent = 0
    while True:
        changed = log.changed
        while index < len(log.events):
            event, data = log.events[index]
            index += 1
            yield encode(index, event, data)
            sent += 1
            if cut_after and sent >= cut_after:
                return  # the fault: the connection drops mid-answer
            if event == "done":
                return
        try:
            await asyncio.wait_for(changed.wait(), KEEPALIVE_SECONDS)
        except TimeoutError:
            yield b": keep-alive\n\n"


async def get_stream(request: Request) -> Response:
    """GET /stream/{id}: the prediction's events as `text/event-stream`."""
    sandbox = request.app.state.sandbox
    run = sandbox.runs.get(request.path_params["id"])
    if run is None or run.stream is None:
        return not_found("Stream not found.")
    try:
        after = max(0, int(request.headers.get("last-event-id", "0")))
    except ValueError:
        after = 0
    return StreamingResponse(
        follow(run.stream, after, sandbox.faults.cut_streams_after),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store"},
    )


routes = [Route("/stream/{id}", get_stream, methods=["GET"])]
