"""Bounded requests: each route's body cap is enforced before anything reads the body.

`BodyLimit` wraps the whole app. A declared `Content-Length` over the route's cap is answered 413
at once, without reading a byte of the body; a body without one (chunked) is counted as it
streams and answered 413 as soon as it passes the cap. The 413 closes the connection, so the rest
is never read (a client that is still writing may see the connection reset before it reads the
413: the price of not reading the rest; one that declares its length and waits, or sends
`Expect: 100-continue`, reads the 413). What was read is then handed to the app as if it came
from the socket: no handler ever holds more than its route's cap, whoever sends what.

Routes declare their cap by being a `LimitedRoute`; every other path gets `DEFAULT_MAX_BODY`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bot.rejections import Rejections

__all__ = ["DEFAULT_MAX_BODY", "BodyLimit", "LimitedRoute", "body_limits", "too_deep"]

log = logging.getLogger(__name__)

# Health, metrics and unknown paths take no body worth the name: 64 KiB is already generous.
DEFAULT_MAX_BODY = 64 * 1024
MAX_JSON_DEPTH = 64  # Slack's and Replicate's payloads nest a handful of levels
# A body must arrive whole within this: one held open short of its last byte (or trickled)
# would keep what was read, up to its route's cap, in memory for as long as the client liked.
# Slack's and Replicate's bodies come at once; 4 MiB at 4 Mbit/s takes 8 s.
BODY_DEADLINE = 15.0
_TOO_LARGE = b'{"error": "request body too large"}'
_BAD_REQUEST = b'{"error": "bad request"}'
_TOO_SLOW = b'{"error": "request body not sent in time"}'


class LimitedRoute(Route):
    """A Route that declares the largest request body it accepts, in bytes."""

    def __init__(
        self, path: str, endpoint: Callable[..., Any], *, max_body: int, **options: Any
    ) -> None:
        if max_body < 0:
            raise ValueError("max_body must not be negative")
        super().__init__(path, endpoint, **options)
        self.max_body = max_body


def body_limits(routes: Iterable[BaseRoute]) -> dict[str, int]:
    """Each `LimitedRoute`'s path and cap."""
    return {route.path: route.max_body for route in routes if isinstance(route, LimitedRoute)}


class BodyLimit:
    """ASGI middleware: at most `limits[path]` (else `default`) bytes of body reach `app`."""

    def __init__(
        self,
        app: ASGIApp,
        limits: Mapping[str, int],
        default: int = DEFAULT_MAX_BODY,
        rejections: Rejections | None = None,
    ) -> None:
        self.app = app
        self.limits = dict(limits)
        self.default = default
        self.rejections = rejections or Rejections(log)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.get(scope["path"], self.default)
        declared = _declared_length(scope)
        if declared is None:
            await self._refuse(send, 400, "malformed Content-Length")
            return
        if declared > limit:
            await self._refuse(send, 413, "body over the route's cap (Content-Length)")
            return
        body = bytearray()
        more = True
        try:
            async with asyncio.timeout(BODY_DEADLINE):
                while more:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return  # the client left; nobody to answer
                    body += message.get("body", b"")
                    if len(body) > limit:
                        await self._refuse(send, 413, "body over the route's cap (streamed)")
                        return
                    more = message.get("more_body", False)
        except TimeoutError:
            await self._refuse(send, 408, f"body not sent whole within {BODY_DEADLINE:g} s")
            return
        await self.app(scope, _replay(bytes(body), receive), send)

    async def _refuse(self, send: Send, status: int, reason: str) -> None:
        self.rejections.note(reason)
        content = {413: _TOO_LARGE, 408: _TOO_SLOW}.get(status, _BAD_REQUEST)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(content)).encode()),
                    # The rest of the body is never read: the connection cannot be reused.
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": content})


def _declared_length(scope: Scope) -> int | None:
    """The largest Content-Length declared (0 when none); None when one is not a number."""
    length = 0
    for name, value in scope["headers"]:
        if name.lower() == b"content-length":
            text = value.strip()
            if not text.isdigit() or len(text) > 19:
                return None
            length = max(length, int(text))
    return length


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that yields the body already read, then whatever the socket says next."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> Message:
        return pending.pop() if pending else await receive()

    return replayed


def too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether parsed JSON nests deeper than `limit` (checked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Iterable[Any] = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False
