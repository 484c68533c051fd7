"""A fake Slack Web API on loopback that records every call, for end-to-end tests.

It implements what Conjure's Slack adapter and slack-bolt use: auth.test, chat.postMessage,
chat.update (text and Block Kit blocks), chat.startStream/appendStream/stopStream (streaming
messages; `refuse_streaming` makes them answer an error, as a workspace without them),
chat.postEphemeral (recorded), conversations.open, the
three steps of files_upload_v2 (files.getUploadURLExternal, the upload URL,
files.completeUploadExternal), files.info (where a file was shared, and its
`url_private_download`, served only with the bot token), response_url posts,
and apps.connections.open plus a Socket Mode WebSocket (aiohttp) for Socket Mode tests.
Failures are switched on per test: a channel the bot cannot post in, 429s with Retry-After for
the next N calls of a method, 5xx for the next N calls of a method, a slow method, a revoked
token.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import mimetypes
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import WSMsgType, web
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from bot.serving import serve_app

BOT_TOKEN = "xoxb-fake-bot-token"
SIGN_IN_PAGE = (
    "<!DOCTYPE html><html><head><title>Sign in | Slack</title></head><body></body></html>"
)
APP_TOKEN = "xapp-fake-app-token"
TEAM_ID = "T0FAKE"
BOT_USER_ID = "U0BOT"
RESPONSE_URL_LIMIT = 5  # Slack: five posts per response_url


@dataclass
class SlackCall:
    """One Web API call as received: method, arguments from query, form or JSON, headers."""

    method: str
    args: dict[str, Any]
    headers: dict[str, str]
    at: float  # time.monotonic() on arrival
    status: int = 200
    error: str | None = None


@dataclass
class Message:
    """A message the bot posted; `edits` holds every text chat.update gave it, in order."""

    channel: str
    ts: str
    text: str
    thread_ts: str | None = None
    files: list[str] = field(default_factory=list)  # file ids shared with it
    edits: list[str] = field(default_factory=list)
    blocks: list[dict[str, Any]] | None = None  # as last posted or updated
    streaming: bool = False  # started by chat.startStream and not stopped yet
    streamed: bool = False  # made by chat.startStream
    recipient: tuple[str, str] | None = None  # a streaming message's (user, team)
    block_edits: list[list[dict[str, Any]] | None] = field(default_factory=list)

    @property
    def buttons(self) -> list[dict[str, Any]]:
        """Every button in its blocks, in order."""
        return [
            element
            for block in self.blocks or []
            if block.get("type") == "actions"
            for element in block.get("elements", [])
            if element.get("type") == "button"
        ]

    @property
    def button_labels(self) -> list[str]:
        return [str(button["text"]["text"]) for button in self.buttons]

    def button(self, label: str) -> dict[str, Any]:
        """The button with this label (KeyError when the message has none)."""
        for button in self.buttons:
            if button["text"]["text"] == label:
                return button
        raise KeyError(label)


@dataclass
class Ephemeral:
    """One chat.postEphemeral: a message only `user` sees."""

    channel: str
    user: str
    text: str
    thread_ts: str | None = None


@dataclass
class Download:
    """One request for a file's url_private_download, and whether it carried the bot token."""

    file_id: str
    authorized: bool


@dataclass
class Upload:
    """One file of files_upload_v2: its upload-URL request, bytes, and where it was shared."""

    file_id: str
    filename: str
    length: int
    alt_txt: str | None
    snippet_type: str | None
    content: bytes | None = None
    title: str | None = None
    channel_id: str | None = None
    thread_ts: str | None = None
    initial_comment: str | None = None


@dataclass
class ResponsePost:
    """One post to a command's response_url."""

    response_id: str
    body: dict[str, Any]
    accepted: bool

    @property
    def text(self) -> str:
        return str(self.body.get("text", ""))

    @property
    def response_type(self) -> str:
        return str(self.body.get("response_type") or "ephemeral")


class FakeSlack:
    """State and switches of one fake Slack; `url` is set once it is served."""

    def __init__(self) -> None:
        self.url = ""
        self.socket_url = ""
        self.calls: list[SlackCall] = []
        self.messages: list[Message] = []
        self.uploads: dict[str, Upload] = {}
        self.mimetypes: dict[str, str] = {}  # file id -> type Slack gives a person's file
        self.responses: list[ResponsePost] = []
        self.ephemerals: list[Ephemeral] = []
        self.downloads: list[Download] = []
        self.cannot_post: dict[str, str] = {}  # channel -> error (not_in_channel, ...)
        self.refuse_in_channel: set[str] = set()  # response ids that only take ephemeral posts
        self.delays: dict[str, float] = {}
        self.invalid_auth = False
        # Files read with a token Slack will not serve them to (the app installed without
        # files:read, a workspace's file policy) answer 200 with Slack's sign-in web page.
        self.sign_in_page = False
        # The error chat.startStream/appendStream/stopStream answer (e.g. "unknown_method" for a
        # workspace without them); None: they work.
        self.refuse_streaming: str | None = None
        self.socket = FakeSocketMode()
        self._rate_limits: dict[str, list[float]] = {}  # method -> Retry-After of next 429s
        self._failures: dict[str, list[int]] = {}  # method -> HTTP status of next failures
        self._ts = itertools.count(1)
        self._ids = itertools.count(1)

    # ---- switches -------------------------------------------------------------------------

    def rate_limit(self, method: str, count: int = 1, retry_after: float = 1) -> None:
        """Answer the next `count` calls of `method` with 429 and Retry-After."""
        self._rate_limits.setdefault(method, []).extend([retry_after] * count)

    def fail(self, method: str, count: int = 1, status: int = 500) -> None:
        """Answer the next `count` calls of `method` with `status` (Slack having a bad day)."""
        self._failures.setdefault(method, []).extend([status] * count)

    def recover(self, method: str) -> None:
        """Stop failing `method`."""
        self._failures.pop(method, None)

    # ---- addresses ------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    def response_url(self, response_id: str) -> str:
        return f"{self.url}/response/{response_id}"

    # ---- what the tests read --------------------------------------------------------------

    def calls_to(self, method: str) -> list[SlackCall]:
        return [call for call in self.calls if call.method == method]

    def channel_messages(self, channel: str) -> list[Message]:
        """Top-level messages in a channel (thread parents and plain posts)."""
        return [m for m in self.messages if m.channel == channel and m.thread_ts is None]

    def replies(self, channel: str, thread_ts: str) -> list[Message]:
        return [m for m in self.messages if m.channel == channel and m.thread_ts == thread_ts]

    def shared_uploads(self) -> list[Upload]:
        """Uploads that files.completeUploadExternal shared somewhere."""
        return [u for u in self.uploads.values() if u.channel_id is not None]

    def responses_to(self, response_id: str) -> list[ResponsePost]:
        return [r for r in self.responses if r.response_id == response_id]

    # ---- the app --------------------------------------------------------------------------

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/api/{method}", self._api, methods=["GET", "POST"]),
                Route("/upload/{file_id}", self._upload, methods=["POST"]),
                Route("/files-pri/{file_id}/{name}", self._download, methods=["GET"]),
                Route("/response/{response_id}", self._response, methods=["POST"]),
            ]
        )

    async def _api(self, request: Request) -> Response:
        method = request.path_params["method"]
        args = await _arguments(request)
        call = SlackCall(method, args, dict(request.headers), time.monotonic())
        self.calls.append(call)
        await asyncio.sleep(self.delays.get(method, 0))
        pending = self._rate_limits.get(method)
        if pending:
            retry_after = pending.pop(0)
            call.status, call.error = 429, "ratelimited"
            return JSONResponse(
                {"ok": False, "error": "ratelimited"},
                status_code=429,
                headers={"Retry-After": f"{retry_after:g}"},
            )
        failing = self._failures.get(method)
        if failing:
            call.status = failing.pop(0)
            call.error = "internal_error" if call.status >= 500 else "request_refused"
            return JSONResponse({"ok": False, "error": call.error}, status_code=call.status)
        token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        token = token or str(args.get("token", ""))
        wanted = APP_TOKEN if method == "apps.connections.open" else BOT_TOKEN
        if self.invalid_auth or token != wanted:
            call.error = "invalid_auth"
            return JSONResponse({"ok": False, "error": "invalid_auth"})
        handler = getattr(self, "_" + method.replace(".", "_"), None)
        if handler is None:
            call.error = "unknown_method"
            return JSONResponse({"ok": False, "error": "unknown_method"})
        body = handler(args)
        call.error = None if body.get("ok") else body.get("error")
        return JSONResponse(body)

    # ---- Web API methods ------------------------------------------------------------------

    def _auth_test(self, _: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://fake.slack.com/",
            "team": "Fake Team",
            "user": "conjure",
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": "B0BOT",
            "is_enterprise_install": False,
        }

    def _chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = str(args.get("channel", ""))
        if channel in self.cannot_post:
            return {"ok": False, "error": self.cannot_post[channel]}
        thread_ts = args.get("thread_ts") or None
        if thread_ts and not any(m.ts == thread_ts for m in self.channel_messages(channel)):
            return {"ok": False, "error": "thread_not_found"}
        message = Message(channel, self._new_ts(), str(args.get("text", "")), thread_ts)
        message.blocks = _blocks(args.get("blocks"))
        self.messages.append(message)
        return {"ok": True, "channel": channel, "ts": message.ts, "message": {"text": message.text}}

    def _chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, ts = str(args.get("channel", "")), str(args.get("ts", ""))
        for message in self.messages:
            if message.channel == channel and message.ts == ts:
                message.text = str(args.get("text", ""))
                message.edits.append(message.text)
                if "blocks" in args:
                    message.blocks = _blocks(args.get("blocks"))
                    message.block_edits.append(message.blocks)
                return {"ok": True, "channel": channel, "ts": ts, "text": message.text}
        return {"ok": False, "error": "message_not_found"}

    def _chat_startStream(self, args: dict[str, Any]) -> dict[str, Any]:
        """A message in a thread that is written as it goes (Slack, 2025)."""
        if self.refuse_streaming:
            return {"ok": False, "error": self.refuse_streaming}
        channel = str(args.get("channel", ""))
        if channel in self.cannot_post:
            return {"ok": False, "error": self.cannot_post[channel]}
        thread_ts = args.get("thread_ts") or None
        if not thread_ts or not any(m.ts == thread_ts for m in self.channel_messages(channel)):
            return {"ok": False, "error": "thread_not_found"}
        user, team = args.get("recipient_user_id"), args.get("recipient_team_id")
        if channel.startswith("C") and not (user and team):
            return {"ok": False, "error": "invalid_arguments"}  # required in channels
        message = Message(channel, self._new_ts(), str(args.get("markdown_text", "")), thread_ts)
        message.streaming = message.streamed = True
        message.recipient = (str(user), str(team))
        message.edits.append(message.text)
        self.messages.append(message)
        return {"ok": True, "channel": channel, "ts": message.ts}

    def _chat_appendStream(self, args: dict[str, Any]) -> dict[str, Any]:
        return self._write_stream(args, stop=False)

    def _chat_stopStream(self, args: dict[str, Any]) -> dict[str, Any]:
        return self._write_stream(args, stop=True)

    def _write_stream(self, args: dict[str, Any], *, stop: bool) -> dict[str, Any]:
        if self.refuse_streaming:
            return {"ok": False, "error": self.refuse_streaming}
        channel, ts = str(args.get("channel", "")), str(args.get("ts", ""))
        message = next((m for m in self.messages if (m.channel, m.ts) == (channel, ts)), None)
        if message is None:
            return {"ok": False, "error": "message_not_found"}
        if not message.streaming:
            return {"ok": False, "error": "message_not_in_streaming_state"}
        if args.get("markdown_text"):
            message.text += str(args["markdown_text"])
            message.edits.append(message.text)
        if stop:
            message.streaming = False
        return {"ok": True, "channel": channel, "ts": ts}

    def _chat_postEphemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = str(args.get("channel", ""))
        if channel in self.cannot_post:
            return {"ok": False, "error": self.cannot_post[channel]}
        thread_ts = args.get("thread_ts") or None
        self.ephemerals.append(
            Ephemeral(channel, str(args.get("user", "")), str(args.get("text", "")), thread_ts)
        )
        return {"ok": True, "message_ts": self._new_ts()}

    def _conversations_open(self, args: dict[str, Any]) -> dict[str, Any]:
        users = str(args.get("users", ""))
        if not users or "," in users:
            return {"ok": False, "error": "invalid_arguments"}
        return {"ok": True, "channel": {"id": f"D{users}"}}

    def _files_getUploadURLExternal(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("filename") or not str(args.get("length", "")).isdigit():
            return {"ok": False, "error": "invalid_arguments"}
        file_id = f"F{next(self._ids):08d}"
        self.uploads[file_id] = Upload(
            file_id,
            str(args["filename"]),
            int(args["length"]),
            args.get("alt_txt"),
            args.get("snippet_type"),
        )
        return {"ok": True, "upload_url": f"{self.url}/upload/{file_id}", "file_id": file_id}

    def _files_completeUploadExternal(self, args: dict[str, Any]) -> dict[str, Any]:
        files = json.loads(str(args.get("files", "[]")))
        channel = args.get("channel_id")
        if channel in self.cannot_post:
            return {"ok": False, "error": self.cannot_post[channel]}
        uploads = [self.uploads.get(str(item.get("id"))) for item in files]
        if not uploads or any(u is None or u.content is None for u in uploads):
            return {"ok": False, "error": "file_not_found"}
        thread_ts = args.get("thread_ts") or None
        for upload, item in zip(uploads, files, strict=True):
            assert upload is not None
            upload.title = item.get("title")
            upload.channel_id, upload.thread_ts = channel, thread_ts
            upload.initial_comment = args.get("initial_comment")
        if channel:
            message = Message(channel, self._new_ts(), str(args.get("initial_comment") or ""))
            message.thread_ts = thread_ts
            message.files = [u.file_id for u in uploads if u is not None]
            self.messages.append(message)
        return {"ok": True, "files": [{"id": i.get("id"), "title": i.get("title")} for i in files]}

    def _files_info(self, args: dict[str, Any]) -> dict[str, Any]:
        """Where a file was shared, from what completeUploadExternal recorded: channel id ->
        [{ts, thread_ts}] under `public` (C...) or `private` (anything else)."""
        upload = self.uploads.get(str(args.get("file", "")))
        if upload is None:
            return {"ok": False, "error": "file_not_found"}
        shares: dict[str, Any] = {}
        for message in self.messages:
            if upload.file_id in message.files:
                kind = "public" if message.channel.startswith("C") else "private"
                share = {"ts": message.ts, "thread_ts": message.thread_ts}
                shares.setdefault(kind, {}).setdefault(message.channel, []).append(share)
        return {
            "ok": True,
            "file": {
                "id": upload.file_id,
                "name": upload.filename,
                "mimetype": mimetypes.guess_type(upload.filename)[0] or "application/octet-stream",
                "size": upload.length,
                "url_private": self.file_url(upload),
                "url_private_download": self.file_url(upload) + "?download=1",
                "shares": shares,
            },
        }

    def person_posts_file(
        self,
        channel: str,
        filename: str,
        content: bytes,
        *,
        text: str = "",
        mimetype: str | None = None,
        thread_ts: str | None = None,
    ) -> Message:
        """A message a person posted with a file in it (not the bot's): its file is readable
        with the bot token like any shared file; `mimetype` is what Slack will say it is."""
        file_id = f"F{next(self._ids):08d}"
        upload = Upload(file_id, filename, len(content), None, None, content)
        upload.channel_id, upload.thread_ts = channel, thread_ts
        self.uploads[file_id] = upload
        self.mimetypes[file_id] = mimetype or mimetypes.guess_type(filename)[0] or ""
        message = Message(channel, self._new_ts(), text, thread_ts=thread_ts, files=[file_id])
        self.messages.append(message)
        return message

    def file_object(self, file_id: str) -> dict[str, Any]:
        """A file as a message_action payload's `message.files[]` carries it."""
        upload = self.uploads[file_id]
        return {
            "id": file_id,
            "name": upload.filename,
            "title": upload.filename,
            "mimetype": self.mimetypes.get(file_id)
            or mimetypes.guess_type(upload.filename)[0]
            or "application/octet-stream",
            "size": upload.length,
            "url_private": self.file_url(upload),
            "url_private_download": self.file_url(upload) + "?download=1",
        }

    def file_url(self, upload: Upload) -> str:
        """Where a file's bytes are served, to the bot token only (as Slack's files.slack.com)."""
        return f"{self.url}/files-pri/{upload.file_id}/{upload.filename}"

    def _apps_connections_open(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "url": f"{self.socket_url}/link/?ticket={uuid.uuid4()}"}

    # ---- uploads and response_url ---------------------------------------------------------

    async def _upload(self, request: Request) -> Response:
        upload = self.uploads.get(request.path_params["file_id"])
        if upload is None:
            return PlainTextResponse("not found", status_code=404)
        content = await request.body()
        if len(content) != upload.length:
            return PlainTextResponse("length mismatch", status_code=400)
        upload.content = content
        return PlainTextResponse(f"OK - {len(content)}")

    async def _download(self, request: Request) -> Response:
        """A file's bytes with the bot token; without it, Slack's sign-in page (not the file)."""
        file_id = request.path_params["file_id"]
        token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        authorized = token == BOT_TOKEN and not self.invalid_auth
        self.downloads.append(Download(file_id, authorized))
        upload = self.uploads.get(file_id)
        if not authorized:
            return Response(
                "<html>Sign in to Slack</html>", status_code=302, headers={"location": "/signin"}
            )
        if upload is None or upload.content is None or upload.channel_id is None:
            return PlainTextResponse("not found", status_code=404)
        if self.sign_in_page:
            return Response(SIGN_IN_PAGE, media_type="text/html")
        media_type = mimetypes.guess_type(upload.filename)[0] or "application/octet-stream"
        return Response(upload.content, media_type=media_type)

    async def _response(self, request: Request) -> Response:
        response_id = request.path_params["response_id"]
        body = json.loads(await request.body() or b"{}")
        await asyncio.sleep(self.delays.get("response_url", 0))  # held before it is recorded
        used = len([r for r in self.responses_to(response_id) if r.accepted])
        refused = used >= RESPONSE_URL_LIMIT or (
            body.get("response_type") == "in_channel" and response_id in self.refuse_in_channel
        )
        self.responses.append(ResponsePost(response_id, body, accepted=not refused))
        if used >= RESPONSE_URL_LIMIT:
            return PlainTextResponse("used_url", status_code=404)
        if refused:
            return PlainTextResponse("channel_not_found", status_code=404)
        return PlainTextResponse("ok")

    def _new_ts(self) -> str:
        n = next(self._ts)
        return f"{1_700_000_000 + n}.{n:06d}"


class FakeSocketMode:
    """The Socket Mode side: a WebSocket that says hello, sends envelopes, records the acks."""

    def __init__(self) -> None:
        self.connections: list[web.WebSocketResponse] = []
        self.acks: dict[str, dict[str, Any]] = {}
        self.connected = asyncio.Event()
        self._acked = asyncio.Condition()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/link/", self._link)
        return app

    async def _link(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.connections.append(ws)
        await ws.send_json({"type": "hello", "num_connections": 1, "connection_info": {}})
        self.connected.set()
        async for message in ws:
            if message.type is WSMsgType.TEXT:
                data = json.loads(message.data)
                async with self._acked:
                    self.acks[data["envelope_id"]] = data.get("payload") or {}
                    self._acked.notify_all()
        return ws

    async def send_command(self, fields: dict[str, str], timeout: float = 5) -> dict[str, Any]:
        """Deliver a slash command envelope; return the payload bolt acknowledged it with."""
        envelope_id = str(uuid.uuid4())
        await asyncio.wait_for(self.connected.wait(), timeout)
        await self.connections[-1].send_json(
            {
                "envelope_id": envelope_id,
                "type": "slash_commands",
                "accepts_response_payload": True,
                "payload": fields,
            }
        )
        async with self._acked:
            await asyncio.wait_for(self._acked.wait_for(lambda: envelope_id in self.acks), timeout)
        return self.acks[envelope_id]

    async def send_interactive(self, payload: dict[str, Any], timeout: float = 5) -> None:
        """Deliver an interactivity envelope (a button press: `block_actions`); wait for its ack."""
        envelope_id = str(uuid.uuid4())
        await asyncio.wait_for(self.connected.wait(), timeout)
        await self.connections[-1].send_json(
            {
                "envelope_id": envelope_id,
                "type": "interactive",
                "accepts_response_payload": False,
                "payload": payload,
            }
        )
        async with self._acked:
            await asyncio.wait_for(self._acked.wait_for(lambda: envelope_id in self.acks), timeout)

    async def close(self) -> None:
        for ws in self.connections:
            await ws.close()


def _blocks(value: Any) -> list[dict[str, Any]] | None:
    """Blocks as sent: a JSON body's list, or a form's JSON string."""
    if value is None or value == "":
        return None
    return json.loads(value) if isinstance(value, str) else list(value)


async def _arguments(request: Request) -> dict[str, Any]:
    """Arguments the way Slack reads them: query string, then a form or JSON body."""
    args: dict[str, Any] = dict(request.query_params)
    body = await request.body()
    content_type = request.headers.get("content-type", "")
    if body and content_type.startswith("application/json"):
        args.update(json.loads(body))
    elif body:
        args.update(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    return args


@contextlib.asynccontextmanager
async def serve_fake_slack() -> AsyncIterator[FakeSlack]:
    """The fake Web API (Starlette under uvicorn) and its Socket Mode endpoint, on loopback."""
    fake = FakeSlack()
    runner = web.AppRunner(fake.socket.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    fake.socket_url = f"ws://{host}:{port}"
    try:
        async with serve_app(fake.app()) as url:
            fake.url = url
            yield fake
    finally:
        await fake.socket.close()
        await runner.cleanup()
