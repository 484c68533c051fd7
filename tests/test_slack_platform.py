"""How `conjure serve` starts Slack: the token check, HTTP or Socket Mode, and shutdown."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from adapters.platforms import run_platform
from bot.app import create_app
from bot.config import ConfigError
from bot.runtime import Runtime
from bot.serving import bind_socket, serve_app, socket_url
from tests.fakes.slack_api import APP_TOKEN, FakeSlack, serve_fake_slack
from tests.slack_harness import block_actions_payload, command_fields, slack_settings


async def test_socket_mode_serves_commands_over_the_websocket_and_no_route(
    sandbox_server, sqlite_url: str
) -> None:
    async with serve_fake_slack() as fake:
        sock = bind_socket()
        settings = slack_settings(
            sandbox_server, sqlite_url, fake, socket_url(sock), slack_app_token=APP_TOKEN
        )
        runtime = await Runtime.start(settings)
        try:
            async with run_platform(runtime, "slack") as slack:
                routes = slack.routes
                assert routes == []
                async with serve_app(create_app(runtime, routes), sock=sock):
                    bad = await fake.socket.send_command(command_fields(fake, "/imagine", ""))
                    good = await fake.socket.send_command(
                        command_fields(fake, "/imagine", "a fox over the socket")
                    )
                    await runtime.service.wait_idle()
                    await sandbox_server.sandbox.wait_idle()
                    await runtime.service.wait_idle()
            [opened] = fake.calls_to("apps.connections.open")
            assert opened.headers["authorization"] == f"Bearer {APP_TOKEN}"
            assert all(ws.closed for ws in fake.socket.connections)  # closed on exit
        finally:
            await runtime.aclose()

        assert bad["response_type"] == "ephemeral" and "The prompt is missing." in bad["text"]
        assert good == {}  # a bare ack
        [parent] = fake.channel_messages("C0GENERAL")
        [upload] = fake.shared_uploads()
        assert upload.thread_ts == parent.ts and upload.content
        assert "✅ done" in parent.text


async def test_socket_mode_takes_button_presses_over_the_websocket(
    sandbox_server, sqlite_url: str
) -> None:
    async with serve_fake_slack() as fake:
        sock = bind_socket()
        settings = slack_settings(
            sandbox_server, sqlite_url, fake, socket_url(sock), slack_app_token=APP_TOKEN
        )
        runtime = await Runtime.start(settings)
        try:
            async with run_platform(runtime, "slack") as slack:
                async with serve_app(create_app(runtime, slack.routes), sock=sock):
                    await fake.socket.send_command(command_fields(fake, "/imagine", "a kite"))
                    await settle(runtime, sandbox_server)
                    [parent] = fake.channel_messages("C0GENERAL")
                    press = block_actions_payload(
                        fake,
                        parent,
                        parent.button("Re-roll"),
                        user_id="U0BOB",
                        user_name="bob",
                        response_id="socket-press",
                    )
                    await fake.socket.send_interactive(press)
                    await settle(runtime, sandbox_server)
        finally:
            await runtime.aclose()

        first, again = fake.shared_uploads()
        assert first.thread_ts == again.thread_ts == parent.ts  # in the same thread
        [status] = [m for m in fake.replies("C0GENERAL", parent.ts) if "Re-roll" in m.text]
        assert "<@U0BOB>" in status.text and "✅ done" in status.text


async def settle(runtime: Runtime, sandbox_server) -> None:  # type: ignore[no-untyped-def]
    for _ in range(3):  # the press's job is started in the background after its ack
        await runtime.service.wait_idle()
        await sandbox_server.sandbox.wait_idle()
    await runtime.service.wait_idle()


async def test_a_rejected_bot_token_stops_start_up_with_a_plain_message(
    sandbox_server, sqlite_url: str
) -> None:
    async with serve_fake_slack() as fake:
        fake.invalid_auth = True
        settings = slack_settings(sandbox_server, sqlite_url, fake, "http://127.0.0.1:9")
        runtime = await Runtime.start(settings)
        try:
            with pytest.raises(
                ConfigError, match=r"SLACK_BOT_TOKEN: Slack rejected it \(invalid_auth\)"
            ):
                async with run_platform(runtime, "slack"):
                    pass
            assert "slack" not in runtime.service.adapters
        finally:
            await runtime.aclose()


async def test_a_rejected_app_token_stops_socket_mode_start_up(
    sandbox_server, sqlite_url: str
) -> None:
    async with serve_fake_slack() as fake:
        settings = slack_settings(
            sandbox_server, sqlite_url, fake, "http://127.0.0.1:9", slack_app_token="xapp-wrong"
        )
        runtime = await Runtime.start(settings)
        try:
            with pytest.raises(ConfigError, match=r"SLACK_APP_TOKEN: .*connections:write"):
                async with run_platform(runtime, "slack"):
                    pass
            assert fake.socket.connections == []
        finally:
            await runtime.aclose()


async def test_http_mode_without_a_signing_secret_refuses_to_start(
    sandbox_server, sqlite_url: str
) -> None:
    fake = FakeSlack()
    fake.url = "http://127.0.0.1:9"  # never called
    settings = slack_settings(
        sandbox_server, sqlite_url, fake, "http://127.0.0.1:9", slack_signing_secret=None
    )
    runtime = await Runtime.start(settings)
    try:
        with pytest.raises(ConfigError, match="SLACK_SIGNING_SECRET"):
            async with run_platform(runtime, "slack"):
                pass
    finally:
        await runtime.aclose()


async def test_an_unreachable_slack_at_start_up_is_only_a_warning(
    sandbox_server, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    fake = FakeSlack()
    fake.url = f"http://127.0.0.1:{port}"
    settings = slack_settings(sandbox_server, sqlite_url, fake, "http://127.0.0.1:9")
    runtime = await Runtime.start(settings)
    try:
        with caplog.at_level(logging.WARNING, logger="adapters.slack.lifecycle"):
            async with run_platform(runtime, "slack") as slack:
                routes = slack.routes
                assert [route.path for route in routes] == ["/slack/events"]
                assert "slack" in runtime.service.adapters
        assert "Slack is unreachable" in caplog.text
    finally:
        await runtime.aclose()


async def test_socket_mode_asks_slack_again_with_a_doubling_wait_up_to_its_cap(
    sandbox_server, sqlite_url: str, caplog: pytest.LogCaptureFixture, monkeypatch
) -> None:
    """While Slack is unreachable: one warning per attempt, no traceback, the wait doubling
    up to SOCKET_RETRY_MAX (2 s, 4 s ... 5 minutes; here shortened, and slack_sdk's own retry
    of a refused connection, which adds 0.5-1.5 s an attempt, left out). The real process's
    first line, with the real 2 s: tests/test_startup_errors.py."""
    from adapters.slack import lifecycle

    monkeypatch.setattr(lifecycle, "SOCKET_RETRY_FIRST", 0.02)
    monkeypatch.setattr(lifecycle, "SOCKET_RETRY_MAX", 0.05)
    monkeypatch.setattr(lifecycle, "retry_handlers", list)
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    fake = FakeSlack()
    fake.url = f"http://127.0.0.1:{port}"
    settings = slack_settings(
        sandbox_server, sqlite_url, fake, "http://127.0.0.1:9", slack_app_token=APP_TOKEN
    )

    def attempts() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "SLACK_API_URL unreachable" in r.getMessage()]

    runtime = await Runtime.start(settings)
    try:
        with caplog.at_level(logging.WARNING, logger="adapters.slack.lifecycle"):
            async with run_platform(runtime, "slack"):
                for _ in range(500):
                    if len(attempts()) >= 4:
                        break
                    await asyncio.sleep(0.01)
    finally:
        await runtime.aclose()
    waits = [r.getMessage().rsplit("retrying in ", 1)[1] for r in attempts()[:4]]
    assert waits == ["0.02 s", "0.04 s", "0.05 s", "0.05 s"], caplog.text
    assert all(r.exc_info is None for r in caplog.records), caplog.text
    assert APP_TOKEN not in caplog.text


def test_the_web_clients_logger_builds_no_debug_text_unless_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """slack_sdk formats its debug text of every call when its logger's own level is DEBUG or
    NOTSET (0); the client's logger is set to INFO, unless an operator set a level of their
    own (kept)."""
    from adapters.slack.lifecycle import client_logger

    logger = logging.getLogger("slack_sdk.web.async_base_client")
    monkeypatch.setattr(logger, "level", logging.NOTSET)
    assert client_logger() is logger and logger.level == logging.INFO
    monkeypatch.setattr(logger, "level", logging.DEBUG)
    assert client_logger().level == logging.DEBUG
