"""The fake Slack Web API of the tests, in a process of its own, with a feed for the benchmark.

`python -m bench.fake_slack_server --port N` serves tests/fakes/slack_api.py's FakeSlack (the
same Web API methods, tokens and errors) plus `GET /_bench/events?after=I`: status messages and
completed file uploads, streamed answers (`first_text` at chat.startStream, `answer` at
chat.stopStream), in order, each with its arrival time on the system-wide monotonic clock
(`time.monotonic()`, comparable across processes). Two changes keep the fake from being the
bottleneck at thousands of jobs: messages are found by (channel, ts) in a dict instead of a
scan, and uploaded bytes are dropped once they are shared.

`POST /_bench/faults` (bench/faults/) makes a Web API method, or the upload route, fail or hang
(see SlackFault); each request it catches is reported in the feed as a `fault` event, so a
benchmark knows the moment a request it holds has arrived. `DELETE /_bench/faults` ends them.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as AsgiMessage

from bench.faults.slack_control import SlackFault, fault_from_json
from bot.sandbox.guard import hold
from bot.serving import bind_socket, run_event_loop, serve_app
from tests.fakes.slack_api import FakeSlack, Message

EVENTS_PAGE = 5000


class BenchSlack(FakeSlack):
    """FakeSlack with indexed messages and an event feed (status posts, uploads, replies)."""

    def __init__(self) -> None:
        super().__init__()
        self.index: dict[tuple[str, str], Message] = {}
        self.events: list[dict[str, Any]] = []
        self.faults: list[SlackFault] = []
        self._streams: dict[tuple[str, str], str | None] = {}  # streamed answer -> its thread

    def _chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = str(args.get("channel", ""))
        if channel in self.cannot_post:
            return {"ok": False, "error": self.cannot_post[channel]}
        thread_ts = args.get("thread_ts") or None
        parent = self.index.get((channel, thread_ts)) if thread_ts else None
        if thread_ts and (parent is None or parent.thread_ts is not None):
            return {"ok": False, "error": "thread_not_found"}
        message = Message(channel, self._new_ts(), str(args.get("text", "")), thread_ts)
        self.messages.append(message)
        self.index[(channel, message.ts)] = message
        kind = "reply" if thread_ts else "status"
        self._event(kind, channel=channel, ts=message.ts, thread_ts=thread_ts, text=message.text)
        return {"ok": True, "channel": channel, "ts": message.ts, "message": {"text": message.text}}

    def _chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, ts = str(args.get("channel", "")), str(args.get("ts", ""))
        message = self.index.get((channel, ts))
        if message is None:
            return {"ok": False, "error": "message_not_found"}
        message.text = str(args.get("text", ""))
        message.edits.append(message.text)
        return {"ok": True, "channel": channel, "ts": ts, "text": message.text}

    def _chat_startStream(self, args: dict[str, Any]) -> dict[str, Any]:
        body = super()._chat_startStream(args)
        if body.get("ok"):
            thread_ts = args.get("thread_ts") or None
            self._event("first_text", channel=body["channel"], ts=body["ts"], thread_ts=thread_ts)
            self._streams[(body["channel"], body["ts"])] = thread_ts
            # Found by chat.update too (a delivery made by another process edits it).
            self.index[(body["channel"], body["ts"])] = self.messages[-1]
        return body

    def _chat_stopStream(self, args: dict[str, Any]) -> dict[str, Any]:
        body = super()._chat_stopStream(args)
        where = (str(args.get("channel", "")), str(args.get("ts", "")))
        if body.get("ok") and where in self._streams:
            self._event("answer", channel=where[0], ts=where[1], thread_ts=self._streams[where])
        return body

    def _files_completeUploadExternal(self, args: dict[str, Any]) -> dict[str, Any]:
        body = super()._files_completeUploadExternal(args)
        if body.get("ok"):
            shared = [self.uploads[str(item["id"])] for item in body["files"]]
            for upload in shared:
                upload.content = b""  # keep the record, not the bytes
            self._event(
                "upload",
                channel=args.get("channel_id"),
                thread_ts=args.get("thread_ts") or None,
                comment=str(args.get("initial_comment") or "")[:200],
                files=len(shared),
                bytes=sum(upload.length for upload in shared),
            )
        return body

    def _event(self, kind: str, **fields: Any) -> None:
        self.events.append({"kind": kind, "at": time.monotonic(), **fields})

    def bench_app(self) -> ASGIApp:
        """The fake's routes plus the benchmark's feed and fault control."""
        app = self.app()
        app.router.routes.append(Route("/_bench/events", self._events_page, methods=["GET"]))
        app.router.routes.append(Route("/_bench/calls", self._calls_page, methods=["GET"]))
        app.router.routes.append(Route("/_bench/faults", self._set_fault, methods=["POST"]))
        app.router.routes.append(Route("/_bench/faults", self._end_faults, methods=["DELETE"]))
        return FaultGuard(app, self)

    async def _set_fault(self, request: Request) -> Response:
        try:
            fault = fault_from_json(await request.json())
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)
        self.faults.append(fault)
        return JSONResponse({"faults": len(self.faults)})

    async def _end_faults(self, request: Request) -> Response:
        self.faults.clear()
        return JSONResponse({"faults": 0})

    def take_fault(self, target: str) -> SlackFault | None:
        """The first fault in force for `target` (a method name, or "upload"), one call used."""
        now = time.monotonic()
        self.faults[:] = [f for f in self.faults if f.live(now)]
        for fault in self.faults:
            if fault.matches(target):
                fault.calls -= 1
                self._event("fault", target=target, action=fault.action, status=fault.status)
                return fault
        return None

    async def _calls_page(self, _: Request) -> Response:
        """How many calls each Web API method has had (what a command costs in Slack's rate
        limits: chat.update is Tier 3, about 50 a minute)."""
        return JSONResponse(dict(Counter(call.method for call in self.calls)))

    async def _events_page(self, request: Request) -> Response:
        after = int(request.query_params.get("after", "0"))
        page = self.events[after : after + EVENTS_PAGE]
        return JSONResponse({"events": page, "next": after + len(page), "calls": len(self.calls)})


class FaultGuard:
    """ASGI wrapper: a request to a faulted method or the upload route fails, or is held
    (before it is handled, or after, its answer kept back) until the hold ends or the client
    hangs up (a killed `conjure serve`); a held request whose client left is not handled."""

    def __init__(self, app: ASGIApp, fake: BenchSlack) -> None:
        self.app = app
        self.fake = fake

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = _target(scope.get("path", "")) if scope["type"] == "http" else None
        fault = self.fake.take_fault(target) if target else None
        if fault is None:
            await self.app(scope, receive, send)
            return
        if fault.action == "fail":
            await fault.response()(scope, receive, send)
            return
        if fault.action == "hold":
            body = await _whole_body(receive)
            if not await hold(receive, fault.hold_seconds):
                await self.app(scope, _replay(body, receive), send)
            return
        kept: list[AsgiMessage] = []

        async def keep(message: AsgiMessage) -> None:
            kept.append(message)

        await self.app(scope, receive, keep)  # "hold_after": done, but its answer held back
        if not await hold(receive, fault.hold_seconds):
            for message in kept:
                await send(message)


async def _whole_body(receive: Receive) -> bytes:
    """The request body, read before a hold (which listens for the client hanging up)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the app the body read already, then the client's messages."""
    sent = False

    async def replay() -> AsgiMessage:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _target(path: str) -> str | None:
    if path.startswith("/api/"):
        return path.removeprefix("/api/")
    if path.startswith("/upload/"):
        return "upload"
    return None


async def serve(host: str, port: int) -> None:
    """Serve until the process is stopped."""
    fake = BenchSlack()
    sock = bind_socket(host, port)
    async with serve_app(fake.bench_app(), sock=sock) as url:
        fake.url = url
        print(f"fake Slack on {url}", flush=True)
        await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        run_event_loop(serve(args.host, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
