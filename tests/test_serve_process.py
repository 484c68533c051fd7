"""`conjure serve` as its own process, the way it runs in production: its event loop (uvloop),
SQLite on that loop, the frozen start-up heap, the platforms started from the environment. One
command on each platform, from the platform's request to the image posted back."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

import httpx

from tests.discord_harness import imagine_over_gateway, serve_env
from tests.fakes.discord_api import running_fake_discord, running_fake_gateway
from tests.fakes.slack_api import BOT_TOKEN, serve_fake_slack
from tests.harness import port_for_another_process, start_serve
from tests.sandbox_fixtures import SandboxServer
from tests.slack_harness import SIGNING_SECRET, command_fields, signed_headers

# Seconds serve may take to stop after Ctrl-C: well under one normally, but a CI machine busy
# with five test workers and a browser once took over 15.
STOP_WITHIN = 30


@contextlib.asynccontextmanager
async def serve_process(
    sandbox: SandboxServer,
    tmp_path: Path,
    platform_env: dict[str, str],
    secrets: tuple[str, ...],
    logged: list[str] | None = None,
) -> AsyncIterator[httpx.AsyncClient]:
    """`python -m bot.cli serve` on a free port, healthy; stopped with Ctrl-C afterwards, when
    its log must hold no warning, no traceback and none of the secrets it was given (and is
    appended to `logged`, line by line)."""
    port = port_for_another_process()
    url = f"http://127.0.0.1:{port}"
    env = {"CONJURE_DATABASE_URL": f"sqlite:///{tmp_path / 'conjure.db'}", **platform_env}
    process = await start_serve(sandbox, tmp_path, port, env)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            await _wait_healthy(http, process)
            assert _children(process.pid) == []  # one worker: served in this very process
            assert "conjure-worker" not in (await http.get("/healthz")).headers
            yield http
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        try:
            _, stderr = await asyncio.wait_for(process.communicate(), timeout=STOP_WITHIN)
        except TimeoutError:  # say what it was doing: its log so far
            process.kill()
            _, stderr = await process.communicate()
            log = stderr.decode()[-3000:]
            raise AssertionError(
                f"serve still running {STOP_WITHIN} s after Ctrl-C: {log}"
            ) from None
    log = stderr.decode()
    if logged is not None:
        logged.extend(log.splitlines())
    assert "Traceback" not in log, log[-3000:]
    assert " WARNING " not in log and " ERROR " not in log, log[-3000:]  # a clean run is quiet
    for secret in (sandbox.token, sandbox.webhook_secret, *secrets):
        assert secret not in log


async def test_slack_command_to_an_image_in_the_thread_logged_as_json(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    """Also the log of a real `serve` in JSON (CONJURE_LOG_FORMAT): the summary it opens with,
    a job's life in four lines, and no prompt, secret or capability URL (one process for what
    were two, this and tests/test_logs.py's; the Discord test below logs plain lines)."""
    logged: list[str] = []
    prompt = "a lighthouse at dusk"
    async with serve_fake_slack() as fake:
        slack_env = {
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": fake.api_url,
            "CONJURE_LOG_FORMAT": "json",
        }
        async with serve_process(
            sandbox_server, tmp_path, slack_env, (BOT_TOKEN, SIGNING_SECRET), logged
        ) as http:
            fields = command_fields(fake, "/imagine", prompt)
            body = urlencode(fields)
            ack = await http.post(
                "/slack/events", content=body, headers=signed_headers(SIGNING_SECRET, body)
            )
            assert ack.status_code == 200
            deadline = time.monotonic() + 30
            while not fake.shared_uploads() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            metrics = (await http.get("/metrics")).text

    [upload] = fake.shared_uploads()
    [parent] = fake.channel_messages("C0GENERAL")
    assert upload.channel_id == "C0GENERAL" and upload.thread_ts == parent.ts
    assert upload.content and upload.filename.endswith((".png", ".webp", ".jpg"))
    assert 'conjure_replicate_webhooks_total{outcome="applied"}' in metrics

    lines = [json.loads(line) for line in logged]  # every line is a JSON object
    assert not [line for line in lines if line["level"] in ("WARNING", "ERROR")], logged
    assert not [line for line in lines if line["logger"].startswith(("httpx", "httpcore"))]
    [started] = [line for line in lines if line.get("event") == "started"]
    assert started["platforms"] == "slack" and started["database"] == "sqlite:" + str(
        tmp_path / "conjure.db"
    )
    assert started["updates"].startswith("webhooks at http://127.0.0.1:")
    assert started["commands"] > 0 and started["models"] > 0
    jobs = [line for line in lines if line["logger"] == "conjure.jobs"]
    assert [line["event"] for line in jobs] == ["recorded", "created", "finished", "delivered"]
    assert jobs[2]["status"] == "succeeded" and jobs[2]["cost"].startswith("$")
    text = "\n".join(logged)
    for secret in (prompt, fields["response_url"], sandbox_server.token):
        assert secret not in text


async def test_discord_interaction_over_the_gateway_to_an_attached_image(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    async with running_fake_discord() as fake, running_fake_gateway(fake) as gateway:
        discord_env = serve_env(fake, gateway)
        async with serve_process(sandbox_server, tmp_path, discord_env, (fake.bot_token,)):
            message = await imagine_over_gateway(fake, gateway, "a lighthouse at dusk")

    assert "✅ done" in message["content"]
    [attachment] = message["attachments"]
    assert attachment["data"]
    [identify] = gateway.identifies
    assert identify["token"] == fake.bot_token


def _children(pid: int) -> list[str]:
    """The pids of a process's children (Linux: /proc; elsewhere, none are seen)."""
    try:
        return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        return []


async def _wait_healthy(http: httpx.AsyncClient, process: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.returncode is not None:
            _, stderr = await process.communicate()
            raise AssertionError(f"serve exited: {stderr.decode()[-3000:]}")
        with contextlib.suppress(httpx.TransportError):
            if (await http.get("/healthz")).status_code == 200:
                return
        await asyncio.sleep(0.1)
    raise AssertionError("serve did not become healthy in 30 s")
