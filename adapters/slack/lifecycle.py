"""Slack for `conjure serve`: slack-bolt's AsyncApp on POST /slack/events, or Socket Mode.

`running` is what adapters/platforms.py enters when SLACK_BOT_TOKEN is set. It checks the token
once (a wrong one stops start-up with a plain message), builds the SlackAdapter, and serves
commands over HTTP (through SlackRequestGate, which checks Slack's signature before bolt parses
anything), or, when SLACK_APP_TOKEN is set, over a Socket Mode connection (Slack then needs no
public URL; Replicate's webhooks still want CONJURE_PUBLIC_URL, or Conjure polls).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.running import RunningPlatform
from adapters.slack.adapter import SlackAdapter
from adapters.slack.bolt_logs import BOLT, bolt_logger, quiet_bolt_loggers
from adapters.slack.buttons import ButtonListener
from adapters.slack.files import SlackFiles
from adapters.slack.listener import SlashCommandListener
from adapters.slack.manifest import EVENTS_PATH
from adapters.slack.reach import BAD_TOKENS, SLACK_ERRORS, retry_handlers
from adapters.slack.shortcuts import ShortcutListener
from adapters.slack.verify import MAX_BODY, SlackRequestGate
from bot.config import ConfigError, Settings
from bot.http_limits import LimitedRoute
from bot.http_transport import KEEPALIVE
from bot.runtime import Runtime

log = logging.getLogger(__name__)

SOCKET_CONNECT_WAIT = 10.0  # seconds start-up waits for the Socket Mode connection
# While Slack is unreachable, Socket Mode asks again after 2 s, then 4, 8... up to 5 minutes.
SOCKET_RETRY_FIRST, SOCKET_RETRY_MAX = 2.0, 300.0
WEB_API_TIMEOUT = 30  # seconds for one Web API call, as slack_sdk's own default
_COMMAND = re.compile(r"^/[a-z0-9_-]{1,31}$")


def make_client(settings: Settings, session: aiohttp.ClientSession | None = None) -> AsyncWebClient:
    """The Web API client: SLACK_API_URL, and retries for dropped connections and 429s.

    Pass `session` to keep connections open between calls (slack_platform does); without one,
    slack_sdk opens a new session and connection for every call.
    """
    token = settings.slack_bot_token
    base_url = str(settings.slack_api_url).rstrip("/") + "/"  # urljoin drops a last segment
    client = AsyncWebClient(
        token=token.get_secret_value() if token else None,
        base_url=base_url,
        session=session,
        logger=client_logger(),
    )
    client.retry_handlers = retry_handlers()
    return client


def client_logger() -> logging.Logger:
    """The Web API client's logger, at INFO of its own.

    slack_sdk writes its debug text of every request and answer (the message's text and blocks,
    the answer's JSON) whenever its logger's *own* level is DEBUG or lower, and a logger's own
    level is 0 (NOTSET) unless set: so it formatted both for every call, to be dropped by the
    effective level. Measured under the bench, that was 2-3 % of serve's CPU. At INFO, that text
    is never made (nor wanted: it quotes what people asked for); warnings and errors still pass.
    """
    logger = logging.getLogger("slack_sdk.web.async_base_client")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    return logger


def make_app(
    settings: Settings,
    client: AsyncWebClient,
    listener: SlashCommandListener,
    buttons: ButtonListener | None = None,
    shortcuts: ShortcutListener | None = None,
) -> AsyncApp:
    """The bolt app with one listener for every slash command, one for every Conjure
    button (`buttons`), and one per message shortcut (`shortcuts`)."""
    secret = settings.slack_signing_secret
    app = AsyncApp(
        client=client,
        signing_secret=secret.get_secret_value() if secret else None,
        # Socket Mode messages are not signed; over HTTP slack_platform requires the secret.
        # SlackRequestGate has checked the signature before bolt sees a request; bolt checking
        # it again is cheap, and a second line of defence.
        request_verification_enabled=secret is not None,
        # bolt's loggers log request bodies: these carry a filter that keeps them out.
        logger=bolt_logger(),
        name=f"{BOLT}.conjure",  # bolt's per-app loggers are named after it
        # Every listener acks first and leaves the work to a background task, so it returns at
        # once; answering when it returns spares bolt's wait for the ack, a poll every 10 ms
        # that, on a busy event loop, was most of an ack's latency.
        process_before_response=True,
    )
    listener.register(app)
    if buttons is not None:
        buttons.register(app)
    if shortcuts is not None:
        shortcuts.register(app)
    app.error(_log_listener_error)
    quiet_bolt_loggers()
    return app


async def _log_listener_error(error: Exception, body: dict[str, Any]) -> None:
    command = body.get("command")
    # The command's name only when it is one (it arrives in the body: no free text is logged).
    what = command if isinstance(command, str) and _COMMAND.match(command) else "a request"
    log.error("Slack listener failed for %s", what, exc_info=error)


async def check_token(client: AsyncWebClient) -> None:
    """auth.test once at start: a rejected token is a configuration error, an outage is not."""
    try:
        identity = await client.auth_test()
    except SlackApiError as exc:
        code = exc.response.get("error")
        if code in BAD_TOKENS:
            raise ConfigError(f"SLACK_BOT_TOKEN: Slack rejected it ({code})") from None
        log.warning("Slack auth.test failed (%s); starting anyway", code)
    except SLACK_ERRORS as exc:
        log.warning("Slack is unreachable (%s); starting anyway", type(exc).__name__)
    else:
        log.info("Slack: signed in as %s in %s", identity.get("user"), identity.get("team"))


@contextlib.asynccontextmanager
async def running(runtime: Runtime) -> AsyncIterator[RunningPlatform]:
    """Run Slack for the duration of the block; yields its adapter and the routes it serves."""
    settings = runtime.settings
    if settings.slack_app_token is None and settings.slack_signing_secret is None:
        # Never serve /slack/events without verifying Slack's signature.
        raise ConfigError("SLACK_SIGNING_SECRET: required unless SLACK_APP_TOKEN (Socket Mode)")
    async with web_api_session() as session:
        async with _serve(runtime, make_client(settings, session)) as platform:
            yield platform


def web_api_session(keepalive: float = KEEPALIVE) -> aiohttp.ClientSession:
    """One session for every Web API call: its pooled connections are kept alive, where
    slack_sdk would otherwise open (and TLS-handshake) a new one per call. Same total timeout.

    An idle connection is dropped after `keepalive` seconds, before a server's own keep-alive
    (uvicorn's is 5 s) can close it under a request. With aiohttp's 15 s, about one `/ask` in 80
    in the bench showed its answer 0.8-1.1 s late (none in 440 at 4 s): the length of
    slack_sdk's retry of a dropped connection, 0.5 s plus up to 1 s of jitter."""
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=WEB_API_TIMEOUT),
        connector=aiohttp.TCPConnector(keepalive_timeout=keepalive),
    )


@contextlib.asynccontextmanager
async def _serve(runtime: Runtime, client: AsyncWebClient) -> AsyncIterator[RunningPlatform]:
    settings = runtime.settings
    await check_token(client)
    adapter = SlackAdapter(client, runtime.catalog)
    files = SlackFiles(client, runtime.http, settings.conjure_max_download_bytes)
    buttons = ButtonListener(runtime.followups, client, files)
    shortcuts = ShortcutListener(runtime.commands, client)
    app = make_app(settings, client, SlashCommandListener(runtime.commands), buttons, shortcuts)
    if settings.slack_app_token is None:
        assert settings.slack_signing_secret is not None  # running() refuses to start without
        gate = SlackRequestGate(app, settings.slack_signing_secret.get_secret_value())
        route = LimitedRoute(EVENTS_PATH, gate.handle, methods=["POST"], max_body=MAX_BODY)
        yield RunningPlatform(adapter, [route])
        return
    socket = AsyncSocketModeHandler(app, settings.slack_app_token.get_secret_value())
    connecting: asyncio.Task[None] | None = None
    try:
        opened = await open_socket_url(socket, retry_in=SOCKET_RETRY_FIRST)
        # Connecting goes on in the background, so the webhooks are served meanwhile; usually
        # it is connected long before the wait is over (no wait while Slack is unreachable).
        connecting = asyncio.create_task(_connect(socket))
        connecting.add_done_callback(_log_connect_failure)
        if opened:
            await asyncio.wait({connecting}, timeout=SOCKET_CONNECT_WAIT)
        yield RunningPlatform(adapter)
    finally:
        if connecting is not None:
            connecting.cancel()
        await socket.close_async()  # also closes its aiohttp session


def _log_connect_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("Slack Socket Mode could not connect", exc_info=task.exception())


async def _connect(socket: AsyncSocketModeHandler) -> None:
    """Open the Socket Mode connection, asking Slack for its URL with backoff while it is
    unreachable: one warning per failed attempt. (slack_sdk's own loop, which takes over once
    there is a URL, would log a traceback every 10 s.)"""
    delay = SOCKET_RETRY_FIRST
    while socket.client.wss_uri is None:
        await asyncio.sleep(delay)
        delay = min(delay * 2, SOCKET_RETRY_MAX)
        await open_socket_url(socket, retry_in=delay)
    await socket.connect_async()


async def open_socket_url(
    socket: AsyncSocketModeHandler, retry_in: float = SOCKET_RETRY_FIRST
) -> bool:
    """apps.connections.open once, so that a rejected SLACK_APP_TOKEN stops start-up; whether
    it gave a URL to connect to."""
    try:
        socket.client.wss_uri = await socket.client.issue_new_wss_url()
    except SlackApiError as exc:
        code = exc.response.get("error")
        if code in BAD_TOKENS or code == "missing_scope":
            raise ConfigError(
                f"SLACK_APP_TOKEN: Slack rejected it ({code}); it must be an app-level token "
                "(xapp-) with the connections:write scope"
            ) from None
        log.warning(
            "Slack Socket Mode: apps.connections.open failed (%s); retrying in %g s",
            code,
            retry_in,
        )
    except SLACK_ERRORS as exc:
        log.warning(
            "Slack Socket Mode: SLACK_API_URL unreachable (%s); retrying in %g s",
            type(exc).__name__,
            retry_in,
        )
    else:
        return True
    return False
