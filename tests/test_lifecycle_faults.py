"""Faults at the edges of a platform's life: a stop just after an ack, a replayed interaction."""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlencode

import httpx
import pytest

from adapters.platforms import start_platforms
from bot.app import create_app
from bot.runtime import Runtime
from bot.serving import bind_socket, serve_app, socket_url
from storage.quotas import QuotaStore
from tests.discord_harness import (
    USER_ID,
    UserOption,
    interaction_payload,
    running_discord_conjure,
)
from tests.fakes.slack_api import serve_fake_slack
from tests.slack_harness import SIGNING_SECRET, command_fields, signed_headers, slack_settings


async def test_a_command_acked_just_before_a_graceful_stop_is_announced_and_started(
    sandbox_server, sqlite_url: str
) -> None:
    """Stopped (SIGTERM, Ctrl-C) right after Slack got its ack: the person saw the command
    taken, so its status message and its prediction must go out before the Web API session
    closes. They were cut off: the platform closed its session under the job's work, then
    the job service cancelled it, leaving a silent channel until a restart recovered it."""
    async with serve_fake_slack() as fake:
        fake.delays["chat.postMessage"] = 0.3  # a Slack that answers a little slowly
        sock = bind_socket()
        settings = slack_settings(sandbox_server, sqlite_url, fake, socket_url(sock))
        runtime = await Runtime.start(settings)
        try:
            async with start_platforms(runtime) as routes:
                async with serve_app(create_app(runtime, routes), sock=sock) as url:
                    body = urlencode(command_fields(fake, "/imagine", "a fox at the door"))
                    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
                        ack = await http.post(
                            "/slack/events",
                            content=body,
                            headers=signed_headers(SIGNING_SECRET, body),
                        )
                    assert ack.status_code == 200
                # leaving both blocks now is how `conjure serve` stops
            [job] = await runtime.store.search()
        finally:
            await runtime.aclose()

        [status] = fake.channel_messages("C0GENERAL")
        assert status.text
        assert job.prediction_id is not None  # started on Replicate, not left to recovery


async def test_a_conjure_command_delivered_twice_runs_once_and_logs_no_error(
    sandbox_server, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Discord may deliver one interaction twice (a RESUME replaying events). A copy of a
    `/conjure quota` change ran the change again (a second audit entry for one command) and,
    its defer refused by Discord (40060, already acknowledged), logged an ERROR with a
    traceback and tried to answer "Something went wrong"."""
    admin, member = 1_100_000_000_000_000_777, USER_ID
    async with running_discord_conjure(
        sandbox_server, sqlite_url, conjure_admins=f"discord:{admin}"
    ) as conjure:
        payload = interaction_payload(
            conjure.discord,
            "conjure",
            {"user": UserOption(member, "fox-lover"), "jobs_per_day": "3"},
            subcommand="quota",
            user_id=admin,
            attachment_size_limit=10 * 1024 * 1024,
        )
        conjure.discord.register_interaction(payload)
        with caplog.at_level(logging.WARNING):
            for _ in range(2):
                before = asyncio.all_tasks()
                conjure.client._connection.parse_interaction_create(payload)  # type: ignore[arg-type]
                await asyncio.wait_for(asyncio.gather(*(asyncio.all_tasks() - before)), 20)
        audit = await QuotaStore(conjure.runtime.engine).audit()

    assert len(audit) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    original = conjure.discord.original(payload["token"])
    assert original is not None and "now has limits: jobs 3/day" in original["content"]
