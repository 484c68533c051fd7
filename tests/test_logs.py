"""Logs that tell the story: one job's life is a handful of `conjure.jobs` lines, plain or JSON,
a refused job one line with its reason, `conjure serve` opens with a summary; and no line holds
a prompt, a token, a secret or a capability URL. A real `conjure serve`'s JSON log:
tests/test_serve_process.py (its Slack test), which starts that process anyway."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.config import ConfigError, load_settings
from bot.logs import (
    QUIET,
    JsonFormatter,
    PlainFormatter,
    database_summary,
    redact,
    startup_summary,
)
from tests import test_queue as queue_tests
from tests.discord_harness import running_discord_conjure
from tests.fakes.slack_api import BOT_TOKEN
from tests.harness import make_settings, running_conjure, settle
from tests.slack_harness import (
    SIGNING_SECRET,
    running_slack_conjure,
)

PROMPT = "a red fox in the snow"
FIELDS = ("job", "platform", "workspace", "user", "command", "model")


@pytest.fixture
def quiet_httpx() -> Iterator[None]:
    """httpx and httpcore at warnings, as `conjure serve` sets them (bot.logs.configure)."""
    before = {name: logging.getLogger(name).level for name in QUIET}
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    yield
    for name, level in before.items():
        logging.getLogger(name).setLevel(level)


def job_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "conjure.jobs"]


async def test_a_jobs_life_is_a_handful_of_lines_plain_and_json(
    sandbox_server, sqlite_url: str, caplog: pytest.LogCaptureFixture, quiet_httpx: None
) -> None:
    caplog.set_level(logging.INFO)
    async with running_slack_conjure(sandbox_server, sqlite_url) as conjure:
        conjure.fake.cannot_post["C0RANDOM"] = "not_in_channel"  # shown via its response_url
        sent = await conjure.slash("/imagine", PROMPT, channel_id="C0RANDOM")
        await conjure.settle(sandbox_server)
        response_url = conjure.fake.response_url(sent.response_id)
        assert len(conjure.fake.responses_to(sent.response_id)) == 2

    records = job_records(caplog)
    plain = [PlainFormatter().format(record) for record in records]
    events = [record.conjure["event"] for record in records]  # type: ignore[attr-defined]
    assert events == ["recorded", "created", "finished", "delivered"], plain
    [job_id] = {record.conjure["job"] for record in records}  # type: ignore[attr-defined]
    finished = plain[2]
    assert f"job {job_id} finished platform=slack workspace=T0FAKE user=U0ADA" in finished
    assert "command=imagine model=flux-schnell status=succeeded cost=$0.003 duration=" in finished
    assert "prediction=" in plain[1] and "updates=webhooks" in plain[1]

    lines = [json.loads(JsonFormatter().format(record)) for record in records]
    for line in lines:
        assert all(line[key] for key in FIELDS), line
        assert line["job"] == job_id and line["platform"] == "slack" and line["user"] == "U0ADA"
    assert lines[2]["status"] == "succeeded" and lines[2]["cost"] == "$0.003"
    assert isinstance(lines[2]["duration"], float)

    everything = "\n".join(PlainFormatter().format(record) for record in caplog.records)
    everything += "\n".join(JsonFormatter().format(record) for record in caplog.records)
    for secret in (
        PROMPT,
        response_url,
        BOT_TOKEN,
        SIGNING_SECRET,
        sandbox_server.token,
        sandbox_server.webhook_secret,
    ):
        assert secret not in everything


async def test_a_job_over_a_limit_is_one_line_with_its_reason(
    sandbox_server, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with running_slack_conjure(
        sandbox_server, sqlite_url, conjure_user_jobs_per_day=1
    ) as conjure:
        await conjure.slash("/imagine", "a heron")
        await conjure.settle(sandbox_server)
        caplog.clear()
        await conjure.slash("/imagine", "a crane")
        await conjure.settle(sandbox_server)

    [refused] = job_records(caplog)
    line = PlainFormatter().format(refused)
    assert " refused platform=slack workspace=T0FAKE user=U0ADA command=imagine" in line, line
    assert 'reason="user jobs limit 1"' in line, line
    assert json.loads(JsonFormatter().format(refused))["reason"] == "user jobs limit 1"


def test_the_log_format_is_plain_or_json() -> None:
    assert load_settings(_env_file=None, conjure_log_format="JSON").conjure_log_format == "json"
    assert load_settings(_env_file=None).conjure_log_format == "plain"
    with pytest.raises(ConfigError, match="CONJURE_LOG_FORMAT: must be plain or json"):
        load_settings(_env_file=None, conjure_log_format="xml")


def test_urls_lose_their_tokens_signatures_and_passwords() -> None:
    token = "aW50ZXJhY3Rpb246MTIzNDU2Nzg5MDEyMzQ1Njc4OTA6c2VjcmV0"
    line = redact(
        f"POST https://discord.com/api/v10/webhooks/1234/{token}/messages/@original failed; "
        "https://hooks.slack.com/commands/T0001/5678/abcdefghijklmnopqrstuvwx "
        "https://replicate.delivery/xezq/out-0.webp?X-Amz-Signature=abc "
        "https://user:hunter2@example.com/webhooks/replicate"
    )
    assert token not in line and "abcdefghijklmnopqrstuvwx" not in line
    assert "Signature" not in line and "hunter2" not in line
    assert "https://discord.com/api/v10/webhooks/1234/…/messages/@original" in line
    assert "https://example.com/webhooks/replicate" in line
    url = "postgresql+asyncpg://conjure:hunter2@db.internal:5432/conjure?sslpassword=x"
    assert database_summary(url) == "postgresql://db.internal:5432/conjure"
    assert database_summary("sqlite+aiosqlite:///conjure.db") == "sqlite:conjure.db"


def test_plain_and_json_lines_are_redacted_too() -> None:
    record = logging.LogRecord(
        "httpx", logging.WARNING, __file__, 1, "GET %s", ("https://x.io/a/" + "t" * 40,), None
    )
    assert PlainFormatter().format(record).endswith("GET https://x.io/a/…")
    assert json.loads(JsonFormatter().format(record))["message"] == "GET https://x.io/a/…"


async def test_a_command_with_bad_input_is_one_line_without_its_text(
    sandbox_server, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with running_slack_conjure(sandbox_server, sqlite_url) as conjure:
        await conjure.slash("/imagine", "a secret garden --ar 99:1")
        await conjure.settle(sandbox_server)

    assert not job_records(caplog)
    [refused] = [record for record in caplog.records if record.name == "conjure.commands"]
    line = PlainFormatter().format(refused)
    assert "command /imagine refused platform=slack workspace=T0FAKE user=U0ADA" in line, line
    assert 'reason="bad input"' in line
    assert "secret garden" not in "\n".join(record.getMessage() for record in caplog.records)


async def test_discord_jobs_log_no_interaction_token(
    sandbox_server, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # even httpx's request lines, which serve does not show
    async with running_discord_conjure(sandbox_server, sqlite_url) as conjure:
        sent = await conjure.interact("imagine", {"prompt": PROMPT})
        await conjure.settle()
        bot_token = conjure.discord.bot_token

    events = [record.conjure["event"] for record in job_records(caplog)]  # type: ignore[attr-defined]
    assert events == ["recorded", "created", "finished", "delivered"]
    shown = "\n".join(PlainFormatter().format(record) for record in caplog.records)
    shown += "\n".join(JsonFormatter().format(record) for record in caplog.records)
    assert sent.token not in shown and bot_token not in shown and PROMPT not in shown


def test_the_summary_says_polling_without_a_public_url(sandbox_server) -> None:
    settings = make_settings(sandbox_server, "sqlite+aiosqlite:///x.db", webhooks=False)
    summary = startup_summary(settings, ["discord"], 4, 10, "http://0.0.0.0:8000")
    assert summary["updates"] == "polling every 0.05s"
    assert summary["platforms"] == "discord" and summary["database"] == "sqlite:x.db"


async def test_a_canceled_job_says_so_with_what_it_cost(
    sandbox_server, sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    sandbox_server.sandbox.config.speed = 1.0  # llama runs ~3 s
    async with running_conjure(sandbox_server, sqlite_url, tmp_path / "out") as conjure:
        console, store = conjure.console, conjure.runtime.store
        running = asyncio.create_task(console.run_line("/ask tell me a long story"))
        while not console._jobs or (await store.get(console._jobs[0])).status != "processing":
            await asyncio.sleep(0.02)
        assert (await console.run_line("/cancel")).ok
        await running
        await settle(conjure, sandbox_server)

    lines = [PlainFormatter().format(record) for record in job_records(caplog)]
    events = [record.conjure["event"] for record in job_records(caplog)]  # type: ignore[attr-defined]
    assert events == ["recorded", "created", "cancel requested", "finished", "delivered"], lines
    assert "platform=console" in lines[3] and "status=canceled cost=$" in lines[3], lines[3]
    assert "long story" not in "\n".join(lines)


async def test_a_queued_job_logs_its_wait_and_its_start(
    sandbox_server, sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    sandbox_server.sandbox.faults.slow_start = 0.3
    async with running_conjure(
        sandbox_server, sqlite_url, tmp_path / "out", conjure_user_max_in_flight=1
    ) as conjure:
        first, second = await queue_tests.submit(conjure, 2)
        await queue_tests.settle_all(conjure, sandbox_server, [first, second])

    def events(job_id: str) -> list[str]:
        return [
            record.conjure["event"]  # type: ignore[attr-defined]
            for record in job_records(caplog)
            if record.conjure["job"] == job_id  # type: ignore[attr-defined]
        ]

    assert events(first.id) == ["recorded", "created", "finished", "delivered"]
    assert events(second.id) == ["queued", "leaves the queue", "created", "finished", "delivered"]
    [queued] = [r for r in job_records(caplog) if r.conjure["event"] == "queued"]  # type: ignore[attr-defined]
    assert "ahead=0" in PlainFormatter().format(queued)
