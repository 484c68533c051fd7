"""`conjure serve` as its own process, the way it runs in production: its event loop (uvloop),
SQLite on that loop, the frozen start-up heap. One /imagine, from a signed slash command to the
image shared in the fake Slack's thread."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx

from bot.serving import bind_socket, socket_url
from tests.fakes.slack_api import BOT_TOKEN, serve_fake_slack
from tests.sandbox_fixtures import SandboxServer
from tests.slack_harness import SIGNING_SECRET, command_fields, sign

ROOT = Path(__file__).resolve().parent.parent


async def test_serve_process_runs_a_command_to_an_image_in_the_thread(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    async with serve_fake_slack() as fake:
        sock = bind_socket()
        url = socket_url(sock)
        port = sock.getsockname()[1]
        sock.close()
        env = {
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": str(ROOT),
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": fake.api_url,
            "REPLICATE_API_TOKEN": sandbox_server.token,
            "REPLICATE_BASE_URL": sandbox_server.url,
            "CONJURE_WEBHOOK_SECRET": sandbox_server.webhook_secret,
            "CONJURE_PUBLIC_URL": url,
            "CONJURE_DATABASE_URL": f"sqlite:///{tmp_path / 'conjure.db'}",
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "bot.cli", "serve", "--host", "127.0.0.1", "--port", str(port)),
            cwd=tmp_path,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with httpx.AsyncClient(base_url=url, timeout=10) as http:
                await _wait_healthy(http, process)
                body = urlencode(command_fields(fake, "/imagine", "a lighthouse at dusk"))
                stamp = int(time.time())
                ack = await http.post(
                    "/slack/events",
                    content=body,
                    headers={
                        "content-type": "application/x-www-form-urlencoded",
                        "x-slack-request-timestamp": str(stamp),
                        "x-slack-signature": sign(SIGNING_SECRET, stamp, body),
                    },
                )
                assert ack.status_code == 200
                deadline = time.monotonic() + 30
                while not fake.shared_uploads() and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                metrics = (await http.get("/metrics")).text
        finally:
            process.send_signal(signal.SIGINT)
            _, stderr = await asyncio.wait_for(process.communicate(), timeout=15)

    [upload] = fake.shared_uploads()
    [parent] = fake.channel_messages("C0GENERAL")
    assert upload.channel_id == "C0GENERAL" and upload.thread_ts == parent.ts
    assert upload.content and upload.filename.endswith((".png", ".webp", ".jpg"))
    assert 'conjure_replicate_webhooks_total{outcome="applied"}' in metrics
    log = stderr.decode()
    assert "Traceback" not in log, log[-2000:]
    for secret in (SIGNING_SECRET, BOT_TOKEN, sandbox_server.token):
        assert secret not in log


async def _wait_healthy(http: httpx.AsyncClient, process: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.returncode is not None:
            _, stderr = await process.communicate()
            raise AssertionError(f"serve exited: {stderr.decode()[-2000:]}")
        try:
            if (await http.get("/healthz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError("serve did not become healthy in 30 s")
