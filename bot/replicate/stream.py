"""Replicate's server-sent events (`urls.stream`), read with the client's own httpx pool.

Parsed here rather than with a library: the format is a dozen lines (`event:`, `data:`, `id:`,
`:` comments, a blank line ends an event), and reading it ourselves lets every line and event be
bounded (MAX_EVENT_BYTES), so a stream that never sends a newline cannot grow memory. As in
Replicate's own client, an event without an `id:` is dropped, and `data:` lines are joined with
`\n`. The stream is only a view: the prediction (its webhook) stays the record.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import httpx

MAX_EVENT_BYTES = 1 << 20  # one event's text (a token is a few bytes; an error a few KB)
READ_TIMEOUT = 60.0  # seconds without a byte (Replicate sends keep-alives while it is quiet)


class StreamError(Exception):
    """The stream could not be read (refused, not an event stream, oversized, dropped)."""


@dataclass(frozen=True)
class Event:
    """One server-sent event: `output`, `error`, `done` (or another name), its data and id."""

    event: str
    data: str
    id: str


class EventParser:
    """Turns lines into events (feed lines without their line ending; a blank one ends it)."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self._size = 0

    def line(self, line: str) -> Event | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a keep-alive comment
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        self._size += len(value)
        if self._size > MAX_EVENT_BYTES:
            raise StreamError("an event larger than the limit")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
        return None

    def _dispatch(self) -> Event | None:
        event, data, event_id = self._event, "\n".join(self._data), self._id
        self._event, self._data, self._size = "", [], 0
        if not event or event_id is None:
            return None  # Replicate's client ignores events without an id; so do we
        return Event(event, data, event_id)


async def read_events(
    http: httpx.AsyncClient, url: str, headers: Mapping[str, str]
) -> AsyncIterator[Event]:
    """The events at `url` until `done` (included) or the server closes; StreamError when
    it cannot be read. Lines end with LF, CRLF or CR, as the SSE format allows."""
    request = http.build_request(
        "GET",
        url,
        headers={**headers, "Accept": "text/event-stream", "Cache-Control": "no-store"},
        timeout=httpx.Timeout(10.0, read=READ_TIMEOUT),
    )
    try:
        response = await http.send(request, stream=True)
    except httpx.HTTPError as exc:
        raise StreamError(f"could not open the stream ({type(exc).__name__})") from exc
    try:
        if response.status_code != 200:
            raise StreamError(f"the stream answered {response.status_code}")
        kind = response.headers.get("content-type", "").partition(";")[0].strip()
        if kind != "text/event-stream":
            raise StreamError(f"not an event stream ({kind or 'no content type'})")
        parser = EventParser()
        pending = ""
        try:
            async for chunk in response.aiter_text():
                pending += chunk
                if len(pending) > MAX_EVENT_BYTES:
                    raise StreamError("a line longer than the limit")
                held = "\r" if pending.endswith("\r") else ""  # may be half of a CRLF
                text = pending[: len(pending) - len(held)]
                lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
                pending = lines.pop() + held
                for line in lines:
                    event = parser.line(line)
                    if event is not None:
                        yield event
                        if event.event == "done":
                            return
        except httpx.HTTPError as exc:
            raise StreamError(f"the stream broke ({type(exc).__name__})") from exc
    finally:
        await response.aclose()
