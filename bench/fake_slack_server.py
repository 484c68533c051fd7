"""The fake Slack Web API of the tests, in a process of its own, with a feed for the benchmark.

`python -m bench.fake_slack_server --port N` serves tests/fakes/slack_api.py's FakeSlack (the
same Web API methods, tokens and errors) plus `GET /_bench/events?after=I`: status messages and
completed file uploads, in order, each with its arrival time on the system-wide monotonic clock
(`time.monotonic()`, comparable across processes). Two changes keep the fake from being the
bottleneck at thousands of jobs: messages are found by (channel, ts) in a dict instead of a
scan, and uploaded bytes are dropped once they are shared.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.serving import bind_socket, run_event_loop, serve_app
from tests.fakes.slack_api import FakeSlack, Message

EVENTS_PAGE = 5000


class BenchSlack(FakeSlack):
    """FakeSlack with indexed messages and an event feed (status posts, uploads, replies)."""

    def __init__(self) -> None:
        super().__init__()
        self.index: dict[tuple[str, str], Message] = {}
        self.events: list[dict[str, Any]] = []

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
                files=len(shared),
                bytes=sum(upload.length for upload in shared),
            )
        return body

    def _event(self, kind: str, **fields: Any) -> None:
        self.events.append({"kind": kind, "at": time.monotonic(), **fields})

    def bench_app(self) -> Starlette:
        """The fake's routes plus the benchmark's feed."""
        app = self.app()
        app.router.routes.append(Route("/_bench/events", self._events_page, methods=["GET"]))
        return app

    async def _events_page(self, request: Request) -> Response:
        after = int(request.query_params.get("after", "0"))
        page = self.events[after : after + EVENTS_PAGE]
        return JSONResponse({"events": page, "next": after + len(page), "calls": len(self.calls)})


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
