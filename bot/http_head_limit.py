"""Bounded request heads: one request's line and headers, at most MAX_HEAD bytes.

uvicorn's httptools protocol has no limit of its own: a 64 MiB header was buffered whole (the
server's RSS grew by 84 MiB) before any app saw the request, so no ASGI middleware can stop it.
This protocol counts the bytes of a request's head as they arrive and, past the cap, answers 431
and closes the connection. (h11, uvicorn's other protocol, has such a limit: 16 KiB.)

Bytes are counted per read only while a head is being received from its start to its end, so a
read that completes a head (and may carry body bytes, even the whole body) is never counted; at
worst one read of a pipelined head goes uncounted, which keeps memory bounded by the cap plus
one read.
"""

from __future__ import annotations

import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from bot.rejections import Rejections

__all__ = ["MAX_HEAD", "BoundedHttpToolsProtocol"]

log = logging.getLogger(__name__)

# Slack's and Replicate's heads are well under 2 KiB; 64 KiB is already generous (nginx allows
# 32 KiB, h11 16 KiB).
MAX_HEAD = 64 * 1024
_BODY = b"request head too large\n"
_RESPONSE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: " + str(len(_BODY)).encode() + b"\r\n"
    b"connection: close\r\n\r\n" + _BODY
)
_rejections = Rejections(log)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a cap on each request's head."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0
        self._heads_completed = 0

    def data_received(self, data: bytes) -> None:
        was_in_head = self._in_head
        heads_before = self._heads_completed
        super().data_received(data)
        # Not counted: a read that began in a body, or completed a head. Being in a head after
        # the read is not enough: a read may carry a whole request, head and body, and leave
        # the parser waiting for the next head (a 100 KiB webhook was refused as a head).
        completed_a_head = self._heads_completed != heads_before
        if not was_in_head or completed_a_head or self.transport.is_closing():
            return
        self._head_bytes += len(data)
        if self._head_bytes > MAX_HEAD:
            _rejections.note("request head over 64 KiB")
            self.transport.write(_RESPONSE)
            self.transport.close()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._heads_completed += 1
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True
